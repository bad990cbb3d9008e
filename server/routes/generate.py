"""`POST /generate`: an answer plus the five predicted judge-score distributions."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.protocol import GenerateRequest, GenerateResponse
from server.routes.lifetime import until_disconnect, work_claim

router = APIRouter()


@router.post("/generate", response_model=GenerateResponse, summary="Answer a conversation and self-evaluate the answer")
async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
    service = request.app.state.see.require_service()
    return await until_disconnect(request, service.generate(body, claim=work_claim(request)))
