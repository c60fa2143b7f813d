"""Real-data pipeline: MP4 I/O, webdataset shards, decode to clip windows, latent cache,
bucketing/packing and a resumable per-rank stream.

Modules (import them directly; this package imports nothing heavy on its own):
- ``av_io``: ``encode_mp4`` / ``decode_mp4`` (H.264 + AAC, audio aligned to the video clock).
- ``shards``: ``write_shards``, ``expand_shards``, ``iter_shard``, ``read_shards``.
- ``decode``: raw shard sample -> resized/cropped clip window + resampled audio + caption.
- ``cache``: codec bundles with an identity hash, ``cache_dataset``, ``check_cache``.
- ``bucketing``: bucket keys and greedy token-budget packing with waste reporting.
- ``stream``: ``ShardStream`` (endless, per rank/worker, resumable) and ``MemoryStream``.
- ``inspect``: dataset statistics and a contact sheet; ``cli``: ``horse data ...``.
"""
