"""What the kiosk's two state machines share (:mod:`edge.kiosk.engine`, the visit;
:mod:`edge.kiosk.reissue`, the order): the errors a holder's action ends with, the devices as
they use them, and the plain words the screen says (zh-CN first, English beside)."""

from __future__ import annotations

from typing import Protocol

from drivers.dispenser.base import CardDispenser
from drivers.reader.base import PresentCard
from edge.errors import EngineError
from sync.card.keys import Keystore


class KioskFault(EngineError):
    """An action the kiosk cannot do now (a device or the server): the screen says what still
    works.  ``code`` names it for scripts."""

    http_status = 503

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class HolderError(EngineError):
    """The holder's input or card does not allow the action (shown, then they may try again)."""

    http_status = 422

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Devices(Protocol):
    """The kiosk's hardware as the engine uses it (:class:`edge.kiosk.agent.KioskAgent`)."""

    def holder_card(self) -> PresentCard | None:
        """The card on the holder's reader, or None; DeviceUnavailable when the reader is gone."""
        ...

    def encoder_card(self, timeout: float) -> PresentCard:
        """The card at the encoder (waits up to ``timeout``); DeviceUnavailable otherwise."""
        ...

    def dispenser(self) -> CardDispenser:
        """The dispenser; DeviceUnavailable when it cannot be opened."""
        ...

    def keys(self) -> Keystore: ...

    def read_code(self, timeout: float) -> str | None:
        """The text of a QR code held up to the camera within ``timeout`` (None: none read);
        DeviceUnavailable without a camera."""
        ...


WORDS: dict[str, str] = {
    "no_card": "请把校园卡放在读卡区 / Please put your campus card on the reader",
    "reader_gone": "读卡器故障，只能办理无卡业务（挂失、解挂、补卡） / The card reader is out of "
    "order: only services without the card work (loss, unlock, reissue)",
    "server_down": "暂时连不上一卡通中心，请稍后再试或到服务台办理 / Cannot reach the card "
    "centre now: try again later or go to the service desk",
    "hopper_empty": "空白卡已用完，暂停自助补卡，请到服务台办理 / No blank cards left: "
    "self-service reissue is paused, please go to the service desk",
    "dispenser_gone": "发卡机故障，暂停自助补卡，请到服务台办理 / The card dispenser is out of "
    "order: self-service reissue is paused, please go to the service desk",
    "dispenser_jammed": "发卡机卡住了，暂停自助补卡，请到服务台办理 / The card dispenser is "
    "jammed: self-service reissue is paused, please go to the service desk",
    "foreign_card": "无法识别这张卡，请到服务台 / This card is not recognised: please go to the "
    "service desk",
    # the hotlist the delta feed brought (said while the server is unreachable too)
    "card_lost": "这张卡已挂失，不能使用。如已找回，请用学工号和查询密码解挂 / This card is "
    "reported lost and cannot be used: if you found it again, unlock it with your number and "
    "query password",
    "card_frozen": "这张卡已冻结，请到服务台办理 / This card is frozen: please go to the "
    "service desk",
    "card_cancelled": "这张卡已注销，不能使用 / This card's account is closed: the card cannot be "
    "used",
    "card_expired": "这张卡已过期，请到服务台办理 / This card has expired: please go to the "
    "service desk",
    "card_replaced": "这张卡已被新卡取代，不能使用 / This card was replaced by a new card and "
    "cannot be used",
    "card_blocked": "这张卡已停用，请到服务台办理 / This card is blocked: please go to the "
    "service desk",
    "desk_only": "此类卡（消费卡、临时卡）请到服务台补办 / Consumer and temporary cards are "
    "reissued at the service desk",
}


def words(code: str, fallback: str) -> str:
    return WORDS.get(code, fallback)
