"""Warnings routers (filled in once the warning store lands)."""

from __future__ import annotations

from fastapi import APIRouter

routers: list[APIRouter] = []
