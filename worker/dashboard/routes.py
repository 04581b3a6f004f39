"""Every dashboard route, in one table: API-CORE's build_app calls add_routes."""

from __future__ import annotations

from aiohttp import web

from .bulk import bulk_apply, bulk_confirm
from .domain_page import domain_page, watch
from .domains_list import domains_page
from .job_page import job_cancel, job_page, job_retry
from .jobs_list import jobs_page
from .login import login, login_form, logout
from .overview import overview
from .static_files import static_file
from .submit import submit_batch, submit_form, submit_scan


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/", overview)
    router.add_get("/jobs", jobs_page)
    router.add_get("/jobs/bulk", bulk_confirm)
    router.add_post("/jobs/bulk", bulk_apply)
    router.add_get("/jobs/{job_id}", job_page)
    router.add_post("/jobs/{job_id}/cancel", job_cancel)
    router.add_post("/jobs/{job_id}/retry", job_retry)
    router.add_get("/domains", domains_page)
    router.add_post("/domains/watch", watch)
    router.add_get("/domains/{domain}", domain_page)
    router.add_get("/submit", submit_form)
    router.add_post("/submit/scan", submit_scan)
    router.add_post("/submit/batch", submit_batch)
    router.add_get("/login", login_form)
    router.add_post("/login", login)
    router.add_post("/logout", logout)
    router.add_get("/static/{name}", static_file)
