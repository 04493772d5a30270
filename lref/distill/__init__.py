"""Distillation: LLM teacher scores and tags into small recall and ranking students.

- `teacher`: resumable teacher scoring of judged and augmented (BM25 + MiniLM top-N) pairs.
- `student`: what the students share: settings, training rows, the training skeleton, `distill.json`.
- `ranker`: a cross-encoder student (MiniLM with a fresh head) on soft teacher scores and gold grades.
- `recall`: a bi-encoder student (MiniLM), its catalogue index in the rag vector store, and recall@k.
- `features` / `ltr`: learning-to-rank features (BM25, students, tags, rating) and a LightGBM lambdarank model.

Each saved student and the LTR model is an eval scorer as it is (`name` and `score(corpus)`).
"""
