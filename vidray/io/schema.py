"""The ingest output schema (versioned) and the status-table schema.

``<out>/clips/part-<key>.parquet``: one row per video, or per chunk of at most
``output.max_frames_per_row`` stored frames of a long video (a row never grows without limit).
``<out>/status/``: one row per manifest entry (per run that processed it), in per-task parts
``part-<key>.parquet`` and in the driver's compacted snapshots ``compacted-<seq>.parquet`` (the same
columns plus ``part``). A clips part counts only when status rows of the same ``<key>`` exist (status
is committed last); the commit protocol and the snapshots are :mod:`vidray.io.dataset`'s.

Changing a column's meaning or type bumps :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

FLOW_META = pa.struct(
    [
        ("algorithm", pa.string()),
        ("bound", pa.float32()),  # pixels; stored value q = clip(round(128 + x*127.5/bound), 0, 255)
        ("flow_fps", pa.float32()),  # rate of the frames a flow pair spans (0 = adjacent source frames)
        ("step", pa.int32()),  # source frames between the two frames of a pair
        ("stack_length", pa.int32()),  # L
        ("encoding", pa.string()),  # jpeg | png | raw, of a (2L*H, W) gray image x1,y1,x2,y2,...
        ("height", pa.int32()),
        ("width", pa.int32()),
    ]
)

CLIP_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("labels", pa.list_(pa.int32())),
        ("split", pa.string()),
        ("chunk_index", pa.int32()),
        ("num_chunks", pa.int32()),
        ("src_fps", pa.float64()),
        ("src_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("width", pa.int32()),  # source display width, pixels
        ("height", pa.int32()),
        ("rotation", pa.int16()),
        ("codec", pa.string()),
        ("frame_index", pa.list_(pa.int32())),  # source frame number of each stored frame
        ("frame_time_s", pa.list_(pa.float32())),  # its presentation time, seconds from the first frame
        ("frame_encoding", pa.string()),  # jpeg | png | raw
        ("frame_height", pa.int32()),  # stored frame size, pixels
        ("frame_width", pa.int32()),
        ("frames", pa.list_(pa.binary())),
        ("flow", pa.list_(pa.binary())),  # null when flow is off; else one stack per stored frame
        ("flow_meta", FLOW_META),
    ],
    metadata={"vidray.schema_version": str(SCHEMA_VERSION)},
)

STATUS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("manifest_row", pa.int64()),
        ("labels", pa.list_(pa.int32())),
        ("split", pa.string()),
        ("status", pa.string()),  # ok | failed | skipped
        ("error_type", pa.string()),  # empty when ok
        ("error", pa.string()),  # message naming the file and the reason; empty when ok
        ("num_frames", pa.int64()),  # stored frames
        ("num_flow", pa.int64()),  # stored flow stacks
        ("num_chunks", pa.int32()),
        ("bytes", pa.int64()),  # encoded frame + flow bytes
        ("seconds", pa.float64()),  # wall time spent on this video
        # added for corpus scale (parts written before them read as null: run 0, size not recorded)
        ("run", pa.int32()),  # the ingest run (dataset.json "runs") that wrote the row; the newest wins
        ("clips_bytes", pa.int64()),  # byte size of the clips part of this row's part (0: no clips part)
    ],
    metadata={"vidray.schema_version": str(SCHEMA_VERSION)},
)


# A compacted status snapshot: every status row of the parts it covers, plus the part's key.
SNAPSHOT_SCHEMA = STATUS_SCHEMA.append(pa.field("part", pa.string()))
