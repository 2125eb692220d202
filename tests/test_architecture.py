"""The layers as a newcomer meets them: importing one piece does not drag in the rest.

(``make lint`` checks the import rules themselves with import-linter; this checks what
an import actually loads at run time, which TYPE_CHECKING-only imports keep small.)
"""

from __future__ import annotations

import subprocess
import sys

from server.devtools.processes import ROOT


def loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_access_rule_loads_no_queue_database_or_hub() -> None:
    loaded = loaded_by("server.web.access")
    assert not {"rq", "psycopg", "psycopg_pool", "server.live.hub", "server.history.db", "jobs"} & loaded


def test_the_domain_loads_no_store_framework_or_queue() -> None:
    loaded = loaded_by("server.domain.display")
    assert not {"redis", "aiohttp", "rq", "psycopg"} & {m.split(".")[0] for m in loaded}
    assert not {m for m in loaded if m.startswith(("server.record", "server.requests", "server.web", "jobs"))}
