"""``ykt sim wallet pay-code | auth-code | scan``: the simulated phone's codes."""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path
from typing import Any, TypeAlias

import segno

from drivers.errors import DriverError
from drivers.qr.decoders import get_decoder, read_image
from sim import phone_screen, wallet_codes
from sim.control import AgentControl, token_file_option
from sim.errors import SimUsageError
from sim.wallet import Wallet
from sync import codes
from sync.money import format_fen

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Cmd: TypeAlias = "Any"


def _show(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Write the code where asked: PNG, video, the agent's camera, the terminal."""

    text = out["text"]
    out["qr_version"] = phone_screen.qr_version(text)
    if args.png:
        phone_screen.qr_png(text, args.png)
        out["png"] = str(args.png)
    if args.video:
        out["video"] = str(write_video(text, args.video, args.condition, args.seed))
    if args.agent:
        buf = io.BytesIO()
        if args.condition == "screen":
            segno.make(text, error="m", micro=False).save(buf, kind="png", scale=8, border=4)
        else:
            import cv2

            frame = phone_screen.render(
                text, phone_screen.look_for(args.condition, random.Random(args.seed))
            )
            buf.write(cv2.imencode(".png", frame)[1].tobytes())
        ctl = AgentControl(args.agent, token_file=args.token_file)
        out["shown"] = ctl.present_code(buf.getvalue())


def write_video(text: str, path: Path, condition: str, seed: int) -> Path:
    """A short clip as a camera sees it: 1 s of scene, the phone held up for 1 s, 0.5 s of
    scene (MJPG in AVI, or mp4v for .mp4), 1280×720 at 25 fps."""
    import cv2

    cond = "clean" if condition == "screen" else condition
    fourcc = cv2.VideoWriter.fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, 25.0, (1280, 720), isColor=False)
    if not writer.isOpened():
        raise SimUsageError(f"OpenCV cannot write a video to {path}")
    try:
        for i in range(25):
            writer.write(phone_screen.render(text, seed=seed + i, present=False))
        for frame in phone_screen.presentation(text, cond, frames=25, seed=seed):
            writer.write(frame)
        for i in range(12):
            writer.write(phone_screen.render(text, seed=seed + 100 + i, present=False))
    finally:
        writer.release()
    return path


def _emit(args: argparse.Namespace, out: dict[str, Any], lines: list[str]) -> int:
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    if not (args.png or args.video or args.agent):
        segno.make(out["text"], error="m", micro=False).terminal(compact=True)
    print("\n".join(lines))
    return 0


def _code(args: argparse.Namespace, kind: codes.Kind) -> int:
    w = Wallet.load(args.wallet)
    out = wallet_codes.make_code(
        w,
        args.wallet,
        kind,
        confirm_password=getattr(args, "confirm_password", None),
        embed_cert=args.embed_cert,
        offset_s=args.clock_offset,
    )
    _show(args, out)
    lines = [
        f"{out['kind']} code {out['cert']}:{out['counter']}"
        + (" (query password confirmed)" if out["confirmed"] else ""),
        out["text"],
    ]
    if out.get("png"):
        lines.append(f"written to {out['png']}")
    return _emit(args, out, lines)


def pay_code(args: argparse.Namespace) -> int:
    return _code(args, codes.Kind.PAY)


def auth_code(args: argparse.Namespace) -> int:
    return _code(args, codes.Kind.AUTH)


def scan(args: argparse.Namespace) -> int:
    w = Wallet.load(args.wallet)
    if args.text is not None:
        text = args.text
    else:
        try:
            found = get_decoder().decode_still(read_image(args.image))
        except (ValueError, DriverError) as exc:
            raise SimUsageError(str(exc)) from exc
        if not found:
            raise SimUsageError(f"no QR code found in {args.image}")
        text = found[0]
    out = wallet_codes.scan(w, text, args.confirm_password, args.wallet)
    if args.png:
        phone_screen.qr_png(out["proof_text"], args.png)
        out["png"] = str(args.png)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    print(
        f"paid {format_fen(out['amount_fen'])} to {out['terminal_id']} (order {out['order']})"
        + (" (already paid: nothing charged again)" if out.get("already_paid") else "")
    )
    print(f"proof code (key it on the terminal's PIN pad): {out['proof_code']}")
    if out.get("png"):
        print(f"proof picture: {out['png']}")
    else:
        print(f"proof: {out['proof_text']}")
    return 0


def add_code_commands(cmd: Cmd) -> None:
    """Register the code subcommands with the wallet's ``cmd(name, fn, help)`` helper."""
    for name, fn, what in (
        ("pay-code", pay_code, "payment code (付款码): a POS camera reads it"),
        ("auth-code", auth_code, "authentication code (认证码): a gate reads it (R18)"),
    ):
        c = cmd(name, fn, f"show the {what}; as terminal text, --png, --video or --agent")
        c.add_argument("--png", type=Path, help="write the code as a PNG picture")
        c.add_argument(
            "--video",
            type=Path,
            help="write a short camera clip (.avi/.mp4) of the phone held up, for camera://file/",
        )
        c.add_argument(
            "--agent", help="show it to this agent's sim:// camera, e.g. http://127.0.0.1:8701"
        )
        token_file_option(c)
        c.add_argument(
            "--condition",
            default="screen",
            choices=[
                "screen",
                "clean",
                "tilt",
                "blur",
                "low_light",
                "glare",
                "small",
                "inverted",
                "mixed",
            ],
            help="for --agent/--video: how the camera sees the phone (default: the bare screen)",
        )
        c.add_argument("--seed", type=int, default=0, help="seed of the rendered look")
        c.add_argument(
            "--embed-cert",
            action="store_true",
            help="carry the wallet certificate inside the code (bigger; for terminals that have "
            "not synced since this sign-in)",
        )
        c.add_argument(
            "--clock-offset",
            type=int,
            default=0,
            metavar="S",
            help="seconds the phone's clock is off (tests of expired / not-yet-valid codes)",
        )
        if name == "pay-code":
            c.add_argument(
                "--confirm-password",
                metavar="PW",
                help="query password: confirm first, for a payment over the daily limit (R6)",
            )
    c = cmd(
        "scan",
        scan,
        "扫一扫: pay a terminal's reverse-scan payment request online; prints the proof "
        "{proof_text, proof_code}",
    )
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the request's text (request_text of `ykt sim sale --reverse`)")
    src.add_argument("--image", type=Path, help="a picture of the request's QR code")
    c.add_argument(
        "--confirm-password", metavar="PW", help="query password, when over the daily limit (R6)"
    )
    c.add_argument("--png", type=Path, help="write the proof as a PNG picture")
