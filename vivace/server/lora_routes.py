"""LoRA adapters over HTTP, as vLLM names the routes: POST /v1/load_lora_adapter {lora_name, lora_path},
POST /v1/unload_lora_adapter {lora_name}; adapters listed in /v1/models with the base model as parent.

Loading reads a directory on the server's disk, so these routes sit behind the API key like every other.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from vivace.engine.lora.adapter import LoRAError
from vivace.server.errors import parse_body
from vivace.server.state import ServerState


class LoadLoRARequest(BaseModel):
    lora_name: str
    lora_path: str


class UnloadLoRARequest(BaseModel):
    lora_name: str


def lora_cards(state: ServerState) -> list[dict[str, Any]]:
    """A /v1/models entry per loaded adapter."""
    return [
        {
            "id": lora.name,
            "object": "model",
            "created": state.created,
            "owned_by": "vivace",
            "root": lora.path,
            "parent": state.model_name,
            "max_model_len": state.engine.engine.max_model_len,
        }
        for lora in state.engine.engine.loras()
    ]


def install_lora_routes(v1: APIRouter, state: ServerState) -> None:
    """Add the load/unload routes to `v1`; LoRAError becomes a 400 naming the field (404 for an unknown name)."""

    @v1.post("/load_lora_adapter")
    async def load_lora_adapter(request: Request) -> PlainTextResponse:
        body: LoadLoRARequest = await parse_body(request, LoadLoRARequest)
        if body.lora_name == state.model_name:
            raise LoRAError("lora_name", f"{body.lora_name!r} is the base model's name")
        await state.engine.add_lora(body.lora_name, body.lora_path)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @v1.post("/unload_lora_adapter")
    async def unload_lora_adapter(request: Request) -> PlainTextResponse:
        body: UnloadLoRARequest = await parse_body(request, UnloadLoRARequest)
        await state.engine.remove_lora(body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
