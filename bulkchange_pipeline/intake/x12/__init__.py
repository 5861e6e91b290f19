"""EDI X12 for B2B exchange (issue 20): read an 856 Ship Notice, answer with a 997 and an 824.

Plain functions, no Dagster and no database: the file-drop sensor calls them and stores what they
return. The flow for one received file (docs/x12-guide.md has the segments and codes)::

    interchange = parse_interchange(data)          # X12Error: not X12 at all -> reject the file
    issues = check_856(interchange)                # envelope + 856 problems, for the 997
    ack = ack_997(interchange, issues, counter)    # send at once, accepted or not
    key = interchange.duplicate_key                # (sender, ISA13): seen before -> ack, don't process
    if not issues:
        requests = request_from_856(interchange, partner_settings)  # one request dict per change
    ...
    advice = advice_824(interchange, device_rows, counter)          # when the bulk change(s) finish
"""

from .acks import ack_997, advice_824
from .envelope import X12Issue, check_envelope
from .ship_notice import (
    PartnerSettings,
    ShippedDevice,
    check_856,
    load_partner_settings,
    request_from_856,
    shipped_devices,
)
from .tokens import Interchange, Segment, Separators, X12Error, parse_interchange
from .writer import ControlNumbers

__all__ = [
    "ControlNumbers",
    "Interchange",
    "PartnerSettings",
    "Segment",
    "Separators",
    "ShippedDevice",
    "X12Error",
    "X12Issue",
    "ack_997",
    "advice_824",
    "check_856",
    "check_envelope",
    "load_partner_settings",
    "parse_interchange",
    "request_from_856",
    "shipped_devices",
]
