"""Distillation: LLM teacher scores and tags into small recall and ranking students.

- `teacher`: resumable teacher scoring of judged and augmented (BM25 + MiniLM top-N) pairs.
- `ranker`: a cross-encoder student (MiniLM with a fresh head) on soft teacher scores and gold grades.
- `recall`: a bi-encoder student (MiniLM) and recall@k over the whole catalogue.
- `index`: a persistent chroma store of precomputed catalogue embeddings.
- `features` / `ltr`: learning-to-rank features (BM25, students, tags, rating) and a LightGBM lambdarank model.
"""
