"""Batch jobs at catalogue scale on Ray Data: tagging, judging and teacher scoring over sharded Parquet.

The per-batch work is the very function the single-process job calls (`tagging.batch.tag_batch`,
`distill.teacher.score_chunk` over the hf engine), run in a Ray actor that loads its model once. Input is
a file or a folder of JSONL/Parquet/CSV shards; output is a folder of Parquet shards, one per input shard,
each written atomically, so a resumed job skips what is done and every input row ends up exactly once in
the output or in the errors dataset. See docs/scale-out.md.
"""
