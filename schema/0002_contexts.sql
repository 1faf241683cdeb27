-- 0002_contexts.sql: cached contexts (a corpus prefilled by one model) and the questions asked
-- of them. The computed state lives in a side file (docs/CONTEXTS.md); a row points to it and
-- is written only after the file is durable (temp -> fsync -> rename -> fsync dir -> row).

-- The model a corpus answers with (`sala corpus model`, or remembered by `sala prefill --model`).
CREATE TABLE corpus_models (
    corpus_id   INTEGER PRIMARY KEY REFERENCES corpora(id) ON DELETE CASCADE,
    model_dir   TEXT NOT NULL
);

-- One context per (corpus, model): replacing the state file replaces the row.
CREATE TABLE contexts (
    id              INTEGER PRIMARY KEY,
    corpus_id       INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,
    model_fp        TEXT NOT NULL,              -- hex xxh3 of config.json + tensor headers
    model_dir       TEXT NOT NULL,
    tokenizer_hash  TEXT NOT NULL,              -- hex xxh3 of tokenizer.json
    tokens_hash     TEXT NOT NULL,              -- hex xxh3 of the prefix token ids
    length          INTEGER NOT NULL,           -- prefix tokens
    documents       INTEGER NOT NULL,
    checkpoints     INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,           -- size of the state file
    path            TEXT NOT NULL,              -- the state file
    created         INTEGER NOT NULL,           -- unix seconds
    prefill_seconds REAL NOT NULL,
    UNIQUE (corpus_id, model_fp)
);

CREATE TABLE questions (
    id           INTEGER PRIMARY KEY,
    corpus_id    INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,
    context_id   INTEGER REFERENCES contexts(id) ON DELETE SET NULL,  -- NULL: retrieval mode
    mode         TEXT NOT NULL CHECK (mode IN ('model', 'retrieval')),
    question     TEXT NOT NULL,
    answer       TEXT NOT NULL,
    citations    TEXT NOT NULL,                 -- JSON: {"quotes": [...], "evidence": [...]}
    timings      TEXT NOT NULL,                 -- JSON: open, question_prefill, first_token, ...
    asked        INTEGER NOT NULL               -- unix seconds
);
CREATE INDEX questions_corpus ON questions (corpus_id, id);
