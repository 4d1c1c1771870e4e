"""Full-text search over alt items: an embedded SQLite FTS5 index by default, OpenSearch (bulk API
over httpx) when configured. Both index by item id, so a redelivered item is replaced, not
duplicated."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from backend.errors import TradeopsError
from backend.messages import AltItem


@dataclass
class Hit:
    id: str
    ts_ns: int
    symbols: list[str]
    headline: str
    sentiment: float
    score: float


class AltIndex(Protocol):
    def index(self, items: list[AltItem]) -> None: ...
    def search(self, query: str, limit: int = 20) -> list[Hit]: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def index_path(data_dir: Path) -> Path:
    return Path(data_dir) / "store" / "alt" / "search.sqlite"


class SqliteIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, ts_ns INTEGER, symbols TEXT, "
            "headline TEXT, body TEXT, sentiment REAL)"
        )
        self.db.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5("
            "headline, body, symbols, content='items', content_rowid='rowid', tokenize='porter')"
        )
        self.db.executescript("""
            CREATE TRIGGER IF NOT EXISTS items_ai AFTER INSERT ON items BEGIN
              INSERT INTO items_fts(rowid, headline, body, symbols)
                VALUES (new.rowid, new.headline, new.body, new.symbols);
            END;
            CREATE TRIGGER IF NOT EXISTS items_ad AFTER DELETE ON items BEGIN
              INSERT INTO items_fts(items_fts, rowid, headline, body, symbols)
                VALUES('delete', old.rowid, old.headline, old.body, old.symbols);
            END;
        """)
        self.db.commit()

    def index(self, items: list[AltItem]) -> None:
        with self.db:
            for it in items:
                self.db.execute("DELETE FROM items WHERE id = ?", (it.id,))
                self.db.execute(
                    "INSERT INTO items (id, ts_ns, symbols, headline, body, sentiment) VALUES (?,?,?,?,?,?)",
                    (it.id, it.ts_ns, " ".join(it.symbols), it.headline, it.body, it.sentiment),
                )

    def search(self, query: str, limit: int = 20) -> list[Hit]:
        try:
            rows = self.db.execute(
                "SELECT items.id, items.ts_ns, items.symbols, items.headline, items.sentiment, "
                "bm25(items_fts) FROM items_fts JOIN items ON items.rowid = items_fts.rowid "
                "WHERE items_fts MATCH ? ORDER BY bm25(items_fts) LIMIT ?",
                (query, limit),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            raise TradeopsError(f"bad search query {query!r}: {exc}") from None
        return [Hit(r[0], r[1], r[2].split(), r[3], r[4], -r[5]) for r in rows]

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM items").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class OpenSearchIndex:
    def __init__(self, url: str, index: str = "alt-items") -> None:
        self.url = url.rstrip("/")
        self.name = index
        self.http = httpx.Client(timeout=10)

    def index(self, items: list[AltItem]) -> None:
        lines = []
        for it in items:
            lines.append(json.dumps({"index": {"_index": self.name, "_id": it.id}}))
            lines.append(
                json.dumps(
                    {
                        "ts_ns": it.ts_ns,
                        "symbols": it.symbols,
                        "headline": it.headline,
                        "body": it.body,
                        "sentiment": it.sentiment,
                    }
                )
            )
        resp = self.http.post(
            f"{self.url}/_bulk", content="\n".join(lines) + "\n", headers={"Content-Type": "application/x-ndjson"}
        )
        resp.raise_for_status()
        if resp.json().get("errors"):
            raise TradeopsError(f"OpenSearch bulk index reported errors: {resp.text[:300]}")

    def search(self, query: str, limit: int = 20) -> list[Hit]:
        resp = self.http.post(
            f"{self.url}/{self.name}/_search",
            json={
                "size": limit,
                "query": {"multi_match": {"query": query, "fields": ["headline^2", "body", "symbols"]}},
            },
        )
        resp.raise_for_status()
        return [
            Hit(
                h["_id"],
                h["_source"]["ts_ns"],
                h["_source"]["symbols"],
                h["_source"]["headline"],
                h["_source"]["sentiment"],
                h["_score"],
            )
            for h in resp.json()["hits"]["hits"]
        ]

    def count(self) -> int:
        resp = self.http.get(f"{self.url}/{self.name}/_count")
        resp.raise_for_status()
        return int(resp.json()["count"])

    def close(self) -> None:
        self.http.close()


def open_index(data_dir: Path, opensearch: str | None = None) -> AltIndex:
    if opensearch:
        return OpenSearchIndex(opensearch)
    return SqliteIndex(index_path(data_dir))
