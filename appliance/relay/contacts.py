"""Which relay address (bare JID) each paired unit has, kept beside the pairings in state.db."""

from __future__ import annotations

from appliance.state import StateStore

SCHEMA = "CREATE TABLE IF NOT EXISTS relay_contacts (unit_id TEXT PRIMARY KEY, jid TEXT NOT NULL)"


class RelayContacts:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        with store.transaction() as db:
            db.execute(SCHEMA)

    def jid_of(self, unit_id: str) -> str | None:
        with self._store.transaction() as db:
            row = db.execute("SELECT jid FROM relay_contacts WHERE unit_id = ?", (unit_id,)).fetchone()
        return str(row[0]) if row else None

    def remember(self, unit_id: str, jid: str) -> bool:
        """Store the unit's relay address; whether it was new or changed."""
        if self.jid_of(unit_id) == jid:
            return False
        with self._store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO relay_contacts (unit_id, jid) VALUES (?, ?)", (unit_id, jid))
        return True

    def keep_only(self, unit_ids: set[str]) -> list[str]:
        """Forget the addresses of units no longer paired; returns their JIDs."""
        with self._store.transaction(scrub=True) as db:
            rows = db.execute("SELECT unit_id, jid FROM relay_contacts").fetchall()
            gone = [(str(u), str(j)) for u, j in rows if u not in unit_ids]
            db.executemany("DELETE FROM relay_contacts WHERE unit_id = ?", [(u,) for u, _ in gone])
        return [j for _, j in gone]
