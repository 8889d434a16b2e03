"""Server-rendered pages: the patch list with search, and one page per patch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from .deps import DbDep
from .catalog import get_patch
from .errors import ApiError

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _numeric_evaluation(evaluation: dict) -> list[tuple[str, float]]:
    """Flat numeric figures from the manifest's free-form `evaluation` dict, for the chart."""
    rows = []
    for key, value in sorted(evaluation.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((key, float(value)))
    return rows[:24]


def _chart(rows: list[tuple[str, float]]) -> dict:
    top = max((abs(v) for _, v in rows), default=0) or 1.0
    bar_h, gap, label_w, width = 18, 6, 180, 300
    bars = [{"label": k, "value": v, "y": i * (bar_h + gap), "w": round(abs(v) / top * width, 1)} for i, (k, v) in enumerate(rows)]
    return {"bars": bars, "height": max(len(rows) * (bar_h + gap), bar_h), "bar_h": bar_h, "label_w": label_w, "width": label_w + width + 80}


@router.get("/", response_class=HTMLResponse)
def index_page(request: Request, db: DbDep, q: Annotated[str | None, Query(max_length=64)] = None,
               domain: Annotated[str | None, Query(max_length=64)] = None,
               base_model: Annotated[str | None, Query(max_length=71)] = None):
    from .routes_api import search

    results = search(db, q=q, domain=domain, base_model=base_model, limit=200).results
    return templates.TemplateResponse(request, "index.html", {"results": results, "q": q or "", "domain": domain or "",
                                                               "base_model": base_model or ""})


@router.get("/patches/{name}", response_class=HTMLResponse)
def patch_page(request: Request, name: str, db: DbDep):
    try:
        with db.reader() as session:
            index = json.loads(get_patch(session, name).index_json)
    except ApiError as exc:
        return templates.TemplateResponse(request, "error.html", {"message": exc.message}, status_code=exc.status)
    versions = list(reversed(index["versions"]))  # newest first
    live = [v for v in versions if not v["yanked"]]
    current = live[0] if live else (versions[0] if versions else None)
    evaluation = _numeric_evaluation(current["manifest"].get("evaluation", {})) if current else []
    base_models = {}
    for v in versions:
        bm = v["base_model"]
        base_models.setdefault(bm["architecture"], {"name": bm.get("name", ""), "weights": bm["weights"], "versions": []})["versions"].append(v["version"])
    return templates.TemplateResponse(request, "patch.html", {
        "index": index, "versions": versions, "current": current, "evaluation": evaluation,
        "chart": _chart(evaluation), "base_models": base_models,
    })
