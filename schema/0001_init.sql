-- 0001_init.sql: corpora, documents, segments, token streams, and the FTS5 index over segment
-- text. Applied once, in one transaction, by db_open (ingest/db.c); never edit after release.

CREATE TABLE corpora (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    created  INTEGER NOT NULL                     -- unix seconds
);

-- One row per file ever offered to a corpus: ingested (`ok`) or `rejected` with its reason.
-- path is the absolute path; name is the path relative to the root it was added from, and is
-- what locators and listings show.
CREATE TABLE documents (
    id              INTEGER PRIMARY KEY,
    corpus_id       INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,
    path            TEXT NOT NULL,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,                -- pdf | xml | code | text | markdown | unknown
    lang            TEXT,                         -- source language of kind=code (from extension)
    sha256          TEXT,                         -- hex; NULL when the file could not be read
    size            INTEGER,
    mtime           INTEGER,                      -- unix seconds
    title           TEXT,
    author          TEXT,
    pages           INTEGER,                      -- PDFs only
    status          TEXT NOT NULL CHECK (status IN ('ok', 'rejected')),
    component       TEXT,                         -- rejected: which stage refused it
    reason          TEXT,                         -- rejected: why
    ingest_version  INTEGER NOT NULL,
    ord             INTEGER NOT NULL,             -- order within the corpus (insertion order)
    added           INTEGER NOT NULL,             -- unix seconds
    UNIQUE (corpus_id, path),
    CHECK ((status = 'ok') = (reason IS NULL))
);
CREATE INDEX documents_corpus_ord ON documents (corpus_id, ord);

-- A document's text in reading order. locator: `p. 12`, `/TEI/text/body/div[2]/p[5]`,
-- `src/x.c:120-180`. page / line_first / line_last are the locator's numbers where it has them.
CREATE TABLE segments (
    id          INTEGER PRIMARY KEY,
    doc_id      INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal     INTEGER NOT NULL,
    locator     TEXT NOT NULL,
    page        INTEGER,
    line_first  INTEGER,
    line_last   INTEGER,
    text        TEXT NOT NULL,
    UNIQUE (doc_id, ordinal)
);
CREATE INDEX segments_locator ON segments (doc_id, locator);

-- Which tokenizer produced a token stream: the sha256 of its tokenizer.json.
CREATE TABLE tokenizers (
    id      INTEGER PRIMARY KEY,
    sha256  TEXT NOT NULL UNIQUE,
    path    TEXT NOT NULL
);

-- Token stream of a segment, cut into chunks of at most 65536 tokens so that no BLOB is larger
-- than 256 KiB (ids) / 512 KiB (offsets). ids: n little-endian int32. offsets: n pairs of
-- little-endian uint32 (start, end) byte offsets into segments.text.
CREATE TABLE tokens (
    segment_id    INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
    tokenizer_id  INTEGER NOT NULL REFERENCES tokenizers(id),
    chunk         INTEGER NOT NULL,
    n             INTEGER NOT NULL CHECK (n BETWEEN 0 AND 65536),
    ids           BLOB NOT NULL CHECK (length(ids) = 4 * n),
    offsets       BLOB NOT NULL CHECK (length(offsets) = 8 * n),
    PRIMARY KEY (segment_id, tokenizer_id, chunk)
);
CREATE INDEX tokens_tokenizer ON tokens (tokenizer_id);

-- Full-text index over segment text (external content: the text is stored once, in segments).
CREATE VIRTUAL TABLE segments_fts USING fts5 (
    text, content = 'segments', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TRIGGER segments_ai AFTER INSERT ON segments BEGIN
    INSERT INTO segments_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER segments_ad AFTER DELETE ON segments BEGIN
    INSERT INTO segments_fts (segments_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
