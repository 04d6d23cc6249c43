"""Flow keys and flow filters, sFlow-RT style, evaluated vectorised over a decoded flow table.

A *key* (``ipsource``, ``tcpdestinationport``, ``macsource``, ...) maps columns of
:data:`fastflow._schema.FLOW_DTYPE` to a fixed-width integer representation (one or two ``uint64``
words per sample) plus a ``defined`` mask: a key is undefined for a sample that does not carry it
(``tcpsourceport`` of a UDP packet, ``ipsource`` of an IPv6 packet). A sample for which any key of a
flow definition is undefined is not counted in that flow, as in sFlow-RT.

Text forms follow sFlow-RT: IP addresses as text, MACs as 12 upper-case hex digits, numbers in
decimal, the agent as its address.

A *filter* is parsed once into a tree and evaluated per batch into a boolean mask::

    expr    := term ('|' term)*
    term    := factor ('&' factor)*
    factor  := '!' factor | '(' expr ')' | key op values
    op      := '=' | '!=' | '~' | '!~'
    values  := value (',' value)*          # a list means "any of" (OR)

``=`` compares text forms exactly (MACs case-insensitively; IP keys also accept ``a.b.c.d/len``
prefixes), ``~`` is a regular expression that must match the whole text form (Python ``re``
syntax; patterns that nest unbounded repetition, such as ``(a+)+``, are refused because they can
backtrack catastrophically). A sample without the key never satisfies ``=`` or ``~`` (so it
satisfies ``!=``/``!~``); ``key=null`` selects the samples without the key, ``key!=null`` those
with it.

Keys and the left-hand side of a comparison may be sFlow-RT key functions (define_flow.php):
``mask:<flowkey>:<bits>``, ``null:<flowkey>:<null_value>``, ``or:<flowkey1>:<flowkey2>...``,
``prefix:<flowkey>:<delim>:<num_tokens>``, ``suffix:...``, nested with ``[...]``. The ``reason``
key names the drop reason of a discarded-packet event (flows defined with ``dropped: true``).
Comparisons are done once per *distinct* key value in the batch and mapped back, so the cost is
``np.unique`` plus a small Python loop over distinct values.
"""

from __future__ import annotations

import ipaddress
import re
import re._constants as _sre  # the stdlib's own pattern parser: used to vet ~ patterns
import re._parser as _sre_parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastflow._schema import FLOW_BIT

__all__ = [
    "KEYS",
    "FilterError",
    "KeySpec",
    "KeyColumns",
    "Filter",
    "parse_filter",
    "parse_keys",
    "key_columns",
]

_U64 = np.uint64
_HDR_BIT = 1 << FLOW_BIT["sampled_header"]
_ETH_BIT = 1 << FLOW_BIT["sampled_ethernet"]
_SW_BIT = 1 << FLOW_BIT["extended_switch"]
_GW_BIT = 1 << FLOW_BIT["extended_gateway"]
_ROUTER_BIT = 1 << FLOW_BIT["extended_router"]


class FilterError(ValueError):
    """A flow definition (keys, value or filter) that cannot be parsed; the message says why."""


@dataclass
class KeyColumns:
    """One key evaluated over a table: ``words`` (each ``uint64[n]``) and ``defined`` (``bool[n]``)."""

    words: list[np.ndarray]
    defined: np.ndarray


Agents = Callable[[int], str]
Extract = Callable[[np.ndarray], KeyColumns]
Format = Callable[[Sequence[int], Agents], str]


@dataclass(frozen=True)
class KeySpec:
    """A flow key: its name, description, how many uint64 words it takes, extract and format.

    Key functions (``mask:``, ``null:``, ``or:``, ``prefix:``, ``suffix:``) are KeySpecs too, built
    by :func:`parse_key`; those that need agent text to compute their words set ``extract_agents``.
    Always evaluate a key with :meth:`columns`."""

    name: str
    description: str
    nwords: int
    extract: Extract
    fmt: Format
    kind: str = "number"   # number | ip4 | ip6 | mac | agent | text
    extract_agents: Callable[[np.ndarray, Agents], KeyColumns] | None = None

    def columns(self, flows: np.ndarray, agents: Agents) -> KeyColumns:
        """The key evaluated over a FLOW_DTYPE table (``agents(i)`` gives agent text)."""
        if self.extract_agents is not None:
            return self.extract_agents(flows, agents)
        return self.extract(flows)


# ------------------------------------------------------------------------------------------------
# extractors
# ------------------------------------------------------------------------------------------------
def _num(col: str, cond: Callable[[np.ndarray], np.ndarray] | None = None,
         transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Extract:
    def extract(f: np.ndarray) -> KeyColumns:
        v = f[col]
        if transform is not None:
            v = transform(v)
        defined = cond(f) if cond is not None else np.ones(len(f), bool)
        return KeyColumns([np.asarray(v).astype(_U64)], np.asarray(defined, bool))
    return extract


def _ipv4(col: str) -> Extract:
    def extract(f: np.ndarray) -> KeyColumns:
        b = np.ascontiguousarray(f[col][:, 12:16])
        v = b.view(">u4").reshape(len(f)).astype(_U64)
        return KeyColumns([v], f["ip_version"] == 4)
    return extract


def _ip16_words(f: np.ndarray, col: str) -> list[np.ndarray]:
    b = np.ascontiguousarray(f[col]).view(">u8").reshape(len(f), 2).astype(_U64)
    return [np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1])]


def _ipv6(col: str) -> Extract:
    def extract(f: np.ndarray) -> KeyColumns:
        return KeyColumns(_ip16_words(f, col), f["ip_version"] == 6)
    return extract


def _ipany(col: str) -> Extract:
    def extract(f: np.ndarray) -> KeyColumns:
        return KeyColumns(_ip16_words(f, col), f["ip_version"] != 0)
    return extract


def _nexthop(f: np.ndarray) -> KeyColumns:
    words = _ip16_words(f, "nexthop")
    return KeyColumns(words, (f["mask"] & (_ROUTER_BIT | _GW_BIT)) != 0)


def _has_eth(f: np.ndarray) -> np.ndarray:
    hdr_eth = ((f["mask"] & _HDR_BIT) != 0) & (f["header_protocol"] == 1)
    sampled_eth = ((f["mask"] & _HDR_BIT) == 0) & ((f["mask"] & _ETH_BIT) != 0)
    return np.asarray(hdr_eth | sampled_eth)


def _l4(proto: int, col: str) -> Extract:
    return _num(col, lambda f: (f["ip_protocol"] == proto) & (f["l4_ok"] == 1)
                & (f["ip_version"] != 0))


def _icmp(col: str) -> Extract:
    return _num(col, lambda f: (((f["ip_protocol"] == 1) & (f["ip_version"] == 4))
                                | ((f["ip_protocol"] == 58) & (f["ip_version"] == 6)))
                & (f["l4_ok"] == 1))


def _vlan(f: np.ndarray) -> KeyColumns:
    hdr = f["vlan"].astype(_U64)
    sw = f["src_vlan"].astype(_U64)
    v = np.where(hdr != 0, hdr, np.where((f["mask"] & _SW_BIT) != 0, sw, 0))
    return KeyColumns([v], v != 0)


def _iface(col: str) -> Extract:
    def extract(f: np.ndarray) -> KeyColumns:
        w = f[col].astype(_U64)
        fmt = w >> _U64(30)
        val = w & _U64(0x3FFFFFFF)
        return KeyColumns([val], (fmt == 0) & (val != 0x3FFFFFFF))
    return extract


# ------------------------------------------------------------------------------------------------
# formatters
# ------------------------------------------------------------------------------------------------
def _fmt_num(w: Sequence[int], agents: Agents) -> str:
    return str(int(w[0]))


def _fmt_ip4(w: Sequence[int], agents: Agents) -> str:
    return str(ipaddress.IPv4Address(int(w[0])))


def _fmt_ip16(w: Sequence[int], agents: Agents) -> str:
    a = ipaddress.IPv6Address((int(w[0]) << 64) | int(w[1]))
    v4 = a.ipv4_mapped
    return str(v4) if v4 is not None else str(a)


def _fmt_mac(w: Sequence[int], agents: Agents) -> str:
    return f"{int(w[0]):012X}"


def _fmt_agent(w: Sequence[int], agents: Agents) -> str:
    return agents(int(w[0]))


def _fmt_hex4(w: Sequence[int], agents: Agents) -> str:
    return f"{int(w[0]):04X}"


def _ds_extract(f: np.ndarray) -> KeyColumns:
    return KeyColumns([f["source_id_type"].astype(_U64), f["source_id_index"].astype(_U64)],
                      np.ones(len(f), bool))


def _fmt_ds(w: Sequence[int], agents: Agents) -> str:
    return data_source_text(int(w[0]), int(w[1]))


def data_source_text(cls: int, index: int) -> str:
    """The sFlow-RT dataSource text of a data source: the ifIndex for class 0, else ``cls.index``."""
    return str(index) if cls == 0 else f"{cls}.{index}"


# sFlow drop reasons (sflow_drops.txt ``enum drop_reason``, as hsflowd's sflow_drop.h lists them):
# the ``reason`` key shows the name, or the decimal code when the code is not listed.
DROP_REASONS: dict[int, str] = dict(enumerate((
    "net_unreachable", "host_unreachable", "protocol_unreachable", "port_unreachable",
    "frag_needed", "src_route_failed", "dst_net_unknown", "dst_host_unknown", "src_host_isolated",
    "dst_net_prohibited", "dst_host_prohibited", "dst_net_tos_unreachable",
    "dst_host_tos_unreacheable", "comm_admin_prohibited", "host_precedence_violation",
    "precedence_cutoff")))
DROP_REASONS.update(enumerate((
    "unknown", "ttl_exceeded", "acl", "no_buffer_space", "red", "traffic_shaping", "pkt_too_big",
    "src_mac_is_multicast", "vlan_tag_mismatch", "ingress_vlan_filter",
    "ingress_spanning_tree_filter", "port_list_is_empty", "port_loopback_filter", "blackhole_route",
    "non_ip", "uc_dip_over_mc_dmac", "dip_is_loopback_address", "sip_is_mc",
    "sip_is_loopback_address", "ip_header_corrupted", "ipv4_sip_is_limited_bc",
    "ipv6_mc_dip_reserved_scope", "ipv6_mc_dip_interface_local_scope", "unresolved_neigh",
    "mc_reverse_path_forwarding", "non_routable_packet", "decap_error", "overlay_smac_is_mc",
    "unknown_l2", "unknown_l3", "unknown_l3_exception", "unknown_buffer", "unknown_tunnel",
    "unknown_l4"), start=256))


def is_discard(f: np.ndarray) -> np.ndarray:
    """Rows decoded from 0:5 discarded-packet events (all False before the decoder has the column)."""
    if f.dtype.names is not None and "discard" in f.dtype.names:
        return np.asarray(f["discard"] != 0)
    return np.zeros(len(f), bool)


def _reason(f: np.ndarray) -> KeyColumns:
    disc = is_discard(f)
    if not disc.any():
        return KeyColumns([np.zeros(len(f), _U64)], disc)
    return KeyColumns([f["discard_reason"].astype(_U64)], disc)


def _fmt_reason(w: Sequence[int], agents: Agents) -> str:
    code = int(w[0])
    return DROP_REASONS.get(code, str(code))


_KEY_LIST: list[KeySpec] = [
    KeySpec("agent", "address of the sFlow agent", 1,
            _num("agent", lambda f: f["agent"] != 0), _fmt_agent, "agent"),
    KeySpec("datasource", "data source of the flow sample (ifIndex, or class.index)", 2,
            _ds_extract, _fmt_ds, "text"),
    KeySpec("inputifindex", "input interface ifIndex (undefined when internal/discarded/multiple)",
            1, _iface("input"), _fmt_num),
    KeySpec("outputifindex", "output interface ifIndex (undefined when internal/discarded/multiple)",
            1, _iface("output"), _fmt_num),
    KeySpec("macsource", "source MAC address (12 hex digits)", 1,
            _num("eth_src", _has_eth), _fmt_mac, "mac"),
    KeySpec("macdestination", "destination MAC address (12 hex digits)", 1,
            _num("eth_dst", _has_eth), _fmt_mac, "mac"),
    KeySpec("ethernetprotocol", "Ethernet type (decimal, e.g. 2048 for IPv4)", 1,
            _num("eth_type", lambda f: f["eth_type"] != 0), _fmt_num),
    KeySpec("vlan", "802.1Q VLAN (outer tag of the header, else extended_switch source VLAN)", 1,
            _vlan, _fmt_num),
    KeySpec("innervlan", "inner 802.1Q VLAN of a QinQ header", 1,
            _num("inner_vlan", lambda f: f["inner_vlan"] != 0), _fmt_num),
    KeySpec("ipversion", "IP version (4 or 6)", 1,
            _num("ip_version", lambda f: f["ip_version"] != 0), _fmt_num),
    KeySpec("ipsource", "IPv4 source address", 1, _ipv4("ip_src"), _fmt_ip4, "ip4"),
    KeySpec("ipdestination", "IPv4 destination address", 1, _ipv4("ip_dst"), _fmt_ip4, "ip4"),
    KeySpec("ipprotocol", "IPv4 protocol", 1,
            _num("ip_protocol", lambda f: f["ip_version"] == 4), _fmt_num),
    KeySpec("iptos", "IPv4 type of service", 1,
            _num("ip_tos", lambda f: f["ip_version"] == 4), _fmt_num),
    KeySpec("ipttl", "IPv4 time to live", 1,
            _num("ip_ttl", lambda f: f["ip_version"] == 4), _fmt_num),
    KeySpec("ip6source", "IPv6 source address", 2, _ipv6("ip_src"), _fmt_ip16, "ip6"),
    KeySpec("ip6destination", "IPv6 destination address", 2, _ipv6("ip_dst"), _fmt_ip16, "ip6"),
    KeySpec("ip6nexthdr", "IPv6 next header (upper-layer protocol)", 1,
            _num("ip_protocol", lambda f: f["ip_version"] == 6), _fmt_num),
    KeySpec("ip6tos", "IPv6 traffic class", 1,
            _num("ip_tos", lambda f: f["ip_version"] == 6), _fmt_num),
    KeySpec("ip6ttl", "IPv6 hop limit", 1,
            _num("ip_ttl", lambda f: f["ip_version"] == 6), _fmt_num),
    KeySpec("ipsrc", "source IP address, IPv4 or IPv6 (fastflow extension)", 2,
            _ipany("ip_src"), _fmt_ip16, "ip6"),
    KeySpec("ipdst", "destination IP address, IPv4 or IPv6 (fastflow extension)", 2,
            _ipany("ip_dst"), _fmt_ip16, "ip6"),
    KeySpec("tcpsourceport", "TCP source port", 1, _l4(6, "src_port"), _fmt_num),
    KeySpec("tcpdestinationport", "TCP destination port", 1, _l4(6, "dst_port"), _fmt_num),
    KeySpec("tcpflags", "TCP flags (decimal)", 1, _l4(6, "tcp_flags"), _fmt_num),
    KeySpec("udpsourceport", "UDP source port", 1, _l4(17, "src_port"), _fmt_num),
    KeySpec("udpdestinationport", "UDP destination port", 1, _l4(17, "dst_port"), _fmt_num),
    KeySpec("icmptype", "ICMP / ICMPv6 type", 1, _icmp("icmp_type"), _fmt_num),
    KeySpec("icmpcode", "ICMP / ICMPv6 code", 1, _icmp("icmp_code"), _fmt_num),
    KeySpec("ipnexthop", "next hop from extended_router / extended_gateway", 2,
            _nexthop, _fmt_ip16, "ip6"),
    KeySpec("bgpas", "the router's own AS (extended_gateway)", 1,
            _num("as_number", lambda f: (f["mask"] & _GW_BIT) != 0), _fmt_num),
    KeySpec("bgpsourceas", "source AS (extended_gateway)", 1,
            _num("src_as", lambda f: (f["mask"] & _GW_BIT) != 0), _fmt_num),
    KeySpec("bgpsourcepeeras", "source peer AS (extended_gateway)", 1,
            _num("src_peer_as", lambda f: (f["mask"] & _GW_BIT) != 0), _fmt_num),
    KeySpec("bgpdestinationas", "destination AS (extended_gateway)", 1,
            _num("dst_as", lambda f: (f["mask"] & _GW_BIT) != 0), _fmt_num),
    KeySpec("bgpdestinationpeeras", "destination peer AS (extended_gateway)", 1,
            _num("dst_peer_as", lambda f: (f["mask"] & _GW_BIT) != 0), _fmt_num),
    KeySpec("headerprotocol", "sampled_header protocol (1 Ethernet, 11 IPv4, 12 IPv6)", 1,
            _num("header_protocol", lambda f: (f["mask"] & _HDR_BIT) != 0), _fmt_num),
    KeySpec("reason", "drop reason of a discarded-packet event (flows with dropped: true)", 1,
            _reason, _fmt_reason, "text"),
]

KEYS: dict[str, KeySpec] = {k.name: k for k in _KEY_LIST}


def key_descriptions() -> dict[str, str]:
    """Every flow key with its description (sFlow-RT ``/flowkeys/json``, a script's ``flowKeys()``)."""
    return {k.name: k.description for k in _KEY_LIST}
_KEY_NAME_RX = re.compile(r"^[a-z0-9]+$")


MAX_KEYS = 32                # keys per definition
MAX_KEY_TEXT = 1000          # characters of one key expression
MAX_INTERNED_TEXT = 4096     # distinct prefix:/suffix: results kept per key function


def split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside square brackets (sFlow-RT nests key functions in [])."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise FilterError(f"unbalanced ']' in {text!r}")
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise FilterError(f"unbalanced '[' in {text!r}")
    out.append("".join(cur))
    return out


def parse_keys(text: str | Sequence[str] | None) -> list[KeySpec]:
    """``"ipsource,mask:ipdestination:24"`` (or a list) -> key specs; :class:`FilterError` if bad.

    An empty/absent ``keys`` is allowed (sFlow-RT: only ``value`` is required): the definition
    then has one flow per data source, whose key is the empty string."""
    if text is None:
        return []
    if isinstance(text, str):
        if not text.strip():
            return []
        names = [n.strip() for n in split_top(text, ",")]
    else:
        names = [str(n).strip() for n in text]
    if any(not n for n in names):
        raise FilterError("keys must be a comma-separated list of flow keys or key functions")
    if len(names) > MAX_KEYS:
        raise FilterError(f"at most {MAX_KEYS} keys per flow definition")
    return [parse_key(n) for n in names]


def parse_key(text: str) -> KeySpec:
    """One flow key or key function (``mask:``, ``null:``, ``or:``, ``prefix:``, ``suffix:``).

    Syntax as sFlow-RT's define_flow: ``<funcname>:<arg1>:<arg2>...``, nested with ``[...]``,
    e.g. ``prefix:[mask:ipsource:16]:.:2``."""
    text = text.strip()
    if len(text) > MAX_KEY_TEXT:
        raise FilterError(f"key expression longer than {MAX_KEY_TEXT} characters")
    if text.startswith("[") and text.endswith("]") and len(split_top(text[1:-1], ":")) >= 1:
        return parse_key(text[1:-1])
    spec = KEYS.get(text.lower())
    if spec is not None:
        return spec
    parts = split_top(text, ":")
    fn, args = parts[0].strip().lower(), parts[1:]
    if len(parts) < 2 or fn not in _KEY_FUNCTIONS:
        raise FilterError(f"unknown flow key {text!r} (GET /flowkeys/json lists them; key "
                          f"functions: {', '.join(sorted(_KEY_FUNCTIONS))})")
    return _KEY_FUNCTIONS[fn](text, args)


def key_columns(spec: KeySpec, flows: np.ndarray, agents: Agents = str) -> KeyColumns:
    """Evaluate one key over a FLOW_DTYPE table."""
    return spec.columns(flows, agents)


# ------------------------------------------------------------------------------------------------
# key functions
# ------------------------------------------------------------------------------------------------
def _fn_mask(text: str, args: list[str]) -> KeySpec:
    """``mask:<flowkey>:<mask_bits>``: the address with its host bits cleared (e.g. 10.1.2.0)."""
    if len(args) != 2:
        raise FilterError(f"{text!r}: mask takes mask:<flowkey>:<mask_bits>")
    inner = parse_key(args[0])
    if inner.kind not in ("ip4", "ip6"):
        raise FilterError(f"{text!r}: mask applies to IP address keys, not {inner.name}")
    try:
        bits = int(args[1])
    except ValueError:
        raise FilterError(f"{text!r}: mask bits must be an integer") from None
    width = 32 if inner.kind == "ip4" else 128
    if not 0 <= bits <= width:
        raise FilterError(f"{text!r}: mask bits must be 0..{width}")

    def extract(f: np.ndarray, agents: Agents) -> KeyColumns:
        kc = inner.columns(f, agents)
        if inner.kind == "ip4":
            m = ((1 << 32) - 1) ^ ((1 << (32 - bits)) - 1)
            return KeyColumns([kc.words[0] & _U64(m)], kc.defined)
        hi, lo = kc.words
        full = ((1 << 128) - 1) ^ ((1 << (128 - bits)) - 1)
        mhi, mlo = _U64(full >> 64), _U64(full & 0xFFFFFFFFFFFFFFFF)
        # an IPv4 address held as ::ffff:a.b.c.d (ipsrc/ipdst/ipnexthop) is masked as IPv4
        v4 = (hi == 0) & ((lo >> _U64(32)) == _U64(0xFFFF))
        m4 = ((1 << 32) - 1) ^ ((1 << max(0, 32 - bits)) - 1) if bits <= 32 else (1 << 32) - 1
        lo4 = (lo & _U64(0xFFFF00000000)) | (lo & _U64(m4))
        return KeyColumns([np.where(v4, hi, hi & mhi), np.where(v4, lo4, lo & mlo)], kc.defined)
    return KeySpec(text, f"{inner.name} masked to /{bits}", inner.nwords, _no_extract, inner.fmt,
                   inner.kind, extract)


def _fn_null(text: str, args: list[str]) -> KeySpec:
    """``null:<flowkey>:<null_value>``: the key, or ``null_value`` where it is undefined."""
    if len(args) < 2:
        raise FilterError(f"{text!r}: null takes null:<flowkey>:<null_value>")
    inner = parse_key(args[0])
    literal = ":".join(args[1:])

    def extract(f: np.ndarray, agents: Agents) -> KeyColumns:
        kc = inner.columns(f, agents)
        d = kc.defined
        words = [np.where(d, w, _U64(0)) for w in kc.words]
        return KeyColumns([d.astype(_U64), *words], np.ones(len(f), bool))

    def fmt(w: Sequence[int], agents: Agents) -> str:
        return inner.fmt(w[1:], agents) if w[0] else literal
    return KeySpec(text, f"{inner.name}, else {literal!r}", 1 + inner.nwords, _no_extract, fmt,
                   "text", extract)


def _fn_or(text: str, args: list[str]) -> KeySpec:
    """``or:<flowkey1>:<flowkey2>...``: the first key that is defined for the sample.

    An argument that is not a flow key is a literal (e.g. ``or:tcpsourceport:udpsourceport:-1``),
    always defined."""
    if len(args) < 2:
        raise FilterError(f"{text!r}: or takes or:<flowkey1>:<flowkey2>...")
    alts: list[KeySpec | str] = []
    for a in args:
        try:
            alts.append(parse_key(a))
        except FilterError:
            if a.startswith("[") or not a.strip():
                raise
            alts.append(a)
    width = max(a.nwords if isinstance(a, KeySpec) else 0 for a in alts)

    def extract(f: np.ndarray, agents: Agents) -> KeyColumns:
        n = len(f)
        sel = np.zeros(n, _U64)
        words = [np.zeros(n, _U64) for _ in range(width)]
        todo = np.ones(n, bool)
        for i, a in enumerate(alts, start=1):
            if not todo.any():
                break
            if isinstance(a, str):
                take = todo.copy()
            else:
                kc = a.columns(f, agents)
                take = todo & kc.defined
                for j, w in enumerate(kc.words):
                    words[j] = np.where(take, w, words[j])
            sel[take] = i
            todo &= ~take
        return KeyColumns([sel, *words], ~todo)

    def fmt(w: Sequence[int], agents: Agents) -> str:
        a = alts[int(w[0]) - 1]
        return a if isinstance(a, str) else a.fmt(w[1:1 + a.nwords], agents)
    return KeySpec(text, "first defined of " + ", ".join(str(getattr(a, "name", a)) for a in alts),
                   1 + width, _no_extract, fmt, "text", extract)


def _text_fn(kind: str) -> Callable[[str, list[str]], KeySpec]:
    def make(text: str, args: list[str]) -> KeySpec:
        """``prefix:<flowkey>:<delim>:<num_tokens>`` (``suffix:`` likewise, from the end)."""
        if len(args) != 3:
            raise FilterError(f"{text!r}: {kind} takes {kind}:<flowkey>:<delim>:<num_tokens>")
        inner = parse_key(args[0])
        delim = args[1]
        try:
            ntok = int(args[2])
        except ValueError:
            raise FilterError(f"{text!r}: num_tokens must be an integer") from None
        if not delim or ntok < 1:
            raise FilterError(f"{text!r}: needs a delimiter and num_tokens >= 1")
        # results are interned per key function (bounded: beyond the cap a result is refused and
        # its samples are not counted; refusals are counted in ``overflow``)
        table: dict[str, int] = {}
        texts: list[str] = [""]
        state = {"overflow": 0}

        def apply(s: str) -> str:
            toks = s.split(delim)
            return delim.join(toks[:ntok] if kind == "prefix" else toks[-ntok:])

        def extract(f: np.ndarray, agents: Agents) -> KeyColumns:
            kc = inner.columns(f, agents)
            out = np.zeros(len(f), _U64)
            idx = np.flatnonzero(kc.defined)
            if len(idx):
                u, inv = _distinct_rows([w[idx] for w in kc.words])
                ids = np.zeros(len(u), _U64)
                for r, row in enumerate(u.tolist()):
                    t = apply(inner.fmt(row, agents))
                    code = table.get(t)
                    if code is None:
                        if len(texts) > MAX_INTERNED_TEXT:
                            state["overflow"] += 1
                            continue
                        code = table[t] = len(texts)
                        texts.append(t)
                    ids[r] = code
                out[idx] = ids[inv]
            return KeyColumns([out], out != 0)

        def fmt(w: Sequence[int], agents: Agents) -> str:
            i = int(w[0])
            return texts[i] if 0 < i < len(texts) else ""
        return KeySpec(text, f"{kind} of {inner.name}", 1, _no_extract, fmt, "text", extract)
    return make


def _no_extract(f: np.ndarray) -> KeyColumns:
    raise TypeError("key functions are evaluated with KeySpec.columns(flows, agents)")


_KEY_FUNCTIONS: dict[str, Callable[[str, list[str]], KeySpec]] = {
    "mask": _fn_mask, "null": _fn_null, "or": _fn_or,
    "prefix": _text_fn("prefix"), "suffix": _text_fn("suffix"),
}


# ------------------------------------------------------------------------------------------------
# filters
# ------------------------------------------------------------------------------------------------
class _Node:
    def mask(self, flows: np.ndarray, agents: Agents, cache: dict[str, KeyColumns]) -> np.ndarray:
        raise NotImplementedError


@dataclass
class _Or(_Node):
    parts: list[_Node]

    def mask(self, flows: np.ndarray, agents: Agents, cache: dict[str, KeyColumns]) -> np.ndarray:
        m = self.parts[0].mask(flows, agents, cache)
        for p in self.parts[1:]:
            m = m | p.mask(flows, agents, cache)
        return m


@dataclass
class _And(_Node):
    parts: list[_Node]

    def mask(self, flows: np.ndarray, agents: Agents, cache: dict[str, KeyColumns]) -> np.ndarray:
        m = self.parts[0].mask(flows, agents, cache)
        for p in self.parts[1:]:
            if not m.any():
                break
            m = m & p.mask(flows, agents, cache)
        return m


@dataclass
class _Not(_Node):
    part: _Node

    def mask(self, flows: np.ndarray, agents: Agents, cache: dict[str, KeyColumns]) -> np.ndarray:
        return ~self.part.mask(flows, agents, cache)


def _distinct_rows(words: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of the given uint64 columns -> (unique rows (m, k), inverse (n,))."""
    if len(words) == 1:
        u, inv = np.unique(words[0], return_inverse=True)
        return u.reshape(-1, 1), inv.reshape(-1)
    stacked = np.ascontiguousarray(np.stack(words, axis=1))
    u, inv = np.unique(stacked, axis=0, return_inverse=True)
    return u, inv.reshape(-1)


@dataclass
class _Cmp(_Node):
    key: KeySpec
    op: str                      # "=", "!=", "~", "!~"
    values: list[str]
    regexes: list[re.Pattern[str]]
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    null: bool = False           # ``key=null`` / ``key!=null``: is the key undefined / defined

    def _test(self, text: str) -> bool:
        if self.op in ("~", "!~"):
            return any(rx.fullmatch(text) for rx in self.regexes)
        if self.key.kind == "mac":
            text = text.upper()
        if text in self.values:
            return True
        if self.nets:
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                return False
            return any(addr.version == n.version and addr in n for n in self.nets)
        return False

    def _numeric(self, kc: KeyColumns) -> np.ndarray | None:
        """Vectorised ``=`` for numbers, MACs and IP addresses/prefixes; None when not applicable."""
        if self.op not in ("=", "!="):
            return None
        kind = self.key.kind
        if kind in ("number", "mac"):
            want = np.array([int(v, 16) if kind == "mac" else int(v) for v in self.values],
                            np.uint64)
            return np.isin(kc.words[0], want)
        if kind == "ip4":
            v = kc.words[0]
            hit = np.zeros(len(v), bool)
            nets = [ipaddress.ip_network(a) for a in self.values] + list(self.nets)
            for net in nets:
                if net.version == 4:
                    lo = int(net.network_address)
                    hit |= (v >= _U64(lo)) & (v <= _U64(lo + net.num_addresses - 1))
            return hit
        if kind == "ip6":
            hi, lo_w = kc.words
            hit = np.zeros(len(hi), bool)
            for net in [ipaddress.ip_network(a) for a in self.values] + list(self.nets):
                if net.version == 4:
                    first = (0xFFFF << 32) | int(net.network_address)
                else:
                    first = int(net.network_address)
                last = first + net.num_addresses - 1
                ahi, alo = _U64(first >> 64), _U64(first & 0xFFFFFFFFFFFFFFFF)
                bhi, blo = _U64(last >> 64), _U64(last & 0xFFFFFFFFFFFFFFFF)
                ge = (hi > ahi) | ((hi == ahi) & (lo_w >= alo))
                le = (hi < bhi) | ((hi == bhi) & (lo_w <= blo))
                hit |= ge & le
            return hit
        return None

    def mask(self, flows: np.ndarray, agents: Agents, cache: dict[str, KeyColumns]) -> np.ndarray:
        kc = cache.get(self.key.name)
        if kc is None:
            kc = cache[self.key.name] = self.key.columns(flows, agents)
        if self.null:
            return ~kc.defined if self.op == "=" else kc.defined.copy()
        fast = self._numeric(kc)
        if fast is not None:
            hit = fast & kc.defined
            return ~hit if self.op == "!=" else hit
        hit = np.zeros(len(flows), bool)
        idx = np.flatnonzero(kc.defined)
        if len(idx):
            u, inv = _distinct_rows([w[idx] for w in kc.words])
            ok = np.fromiter((self._test(self.key.fmt(row, agents)) for row in u.tolist()),
                             bool, count=len(u))
            hit[idx] = ok[inv]
        if self.op in ("!=", "!~"):
            return ~hit
        return hit


_TOKEN_RX = re.compile(r"\s*(?:(\()|(\))|(&)|(\|)|(!=|!~|=|~)|(!)|([^()&|!=~]+))")


class Filter:
    """A parsed sFlow-RT flow filter. ``mask(flows, agents)`` -> ``bool[n]``; ``text`` is the source."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = self._tokenize(text)
        self._pos = 0
        if not self._tokens:
            raise FilterError("empty filter")
        self.root = self._expr()
        if self._pos != len(self._tokens):
            raise FilterError(f"filter: unexpected {self._tokens[self._pos][1]!r} in {text!r}")

    @property
    def keys(self) -> set[str]:
        """Names of the keys the filter reads."""
        out: set[str] = set()

        def walk(n: _Node) -> None:
            if isinstance(n, _Cmp):
                out.add(n.key.name)
            elif isinstance(n, (_And, _Or)):
                for p in n.parts:
                    walk(p)
            elif isinstance(n, _Not):
                walk(n.part)
        walk(self.root)
        return out

    def mask(self, flows: np.ndarray, agents: Agents,
             cache: dict[str, KeyColumns] | None = None) -> np.ndarray:
        """Samples of ``flows`` (FLOW_DTYPE) that pass; ``agents(i)`` gives agent text."""
        if len(flows) == 0:
            return np.zeros(0, bool)
        return self.root.mask(flows, agents, {} if cache is None else cache)

    # -- parsing ------------------------------------------------------------------------------
    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        toks: list[tuple[str, str]] = []
        pos = 0
        kinds = ("(", ")", "&", "|", "op", "!", "word")
        text = text.strip()
        while pos < len(text):
            m = _TOKEN_RX.match(text, pos)
            if m is None or m.end() == pos:
                raise FilterError(f"filter: cannot parse {text[pos:]!r}")
            for i, kind in enumerate(kinds):
                g = m.group(i + 1)
                if g is not None:
                    toks.append((kind, g.strip() if kind == "word" else g))
                    break
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        return toks

    def _peek(self) -> str | None:
        return self._tokens[self._pos][0] if self._pos < len(self._tokens) else None

    def _take(self) -> tuple[str, str]:
        if self._pos >= len(self._tokens):
            raise FilterError(f"filter: unexpected end of {self.text!r}")
        t = self._tokens[self._pos]
        self._pos += 1
        return t

    def _expr(self) -> _Node:
        parts = [self._term()]
        while self._peek() == "|":
            self._take()
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else _Or(parts)

    def _term(self) -> _Node:
        parts = [self._factor()]
        while self._peek() == "&":
            self._take()
            parts.append(self._factor())
        return parts[0] if len(parts) == 1 else _And(parts)

    def _factor(self) -> _Node:
        kind, tok = self._take()
        if kind == "!":
            return _Not(self._factor())
        if kind == "(":
            node = self._expr()
            if self._take()[0] != ")":
                raise FilterError(f"filter: missing ')' in {self.text!r}")
            return node
        if kind != "word":
            raise FilterError(f"filter: expected a key, got {tok!r} in {self.text!r}")
        try:
            spec = parse_key(tok)
        except FilterError as exc:
            raise FilterError(f"filter: {exc}") from None
        okind, op = self._take()
        if okind != "op":
            raise FilterError(f"filter: expected =, !=, ~ or !~ after {tok!r}")
        vkind, vtext = self._take()
        if vkind != "word":
            raise FilterError(f"filter: expected a value after {tok}{op}")
        return _make_cmp(spec, op, vtext)


def _make_cmp(spec: KeySpec, op: str, vtext: str) -> _Cmp:
    values = [v.strip() for v in vtext.split(",")]
    if any(not v for v in values):
        raise FilterError(f"filter: empty value in {spec.name}{op}{vtext}")
    if values == ["null"] and op in ("=", "!="):
        return _Cmp(spec, op, [], [], [], null=True)
    regexes: list[re.Pattern[str]] = []
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    exact: list[str] = []
    if op in ("~", "!~"):
        for v in values:
            regexes.append(_compile_match(v))
    else:
        for v in values:
            if spec.kind in ("ip4", "ip6"):
                try:
                    if "/" in v:
                        nets.append(ipaddress.ip_network(v, strict=False))
                        continue
                    exact.append(str(ipaddress.ip_address(v)))
                except ValueError:
                    raise FilterError(f"filter: {v!r} is not an address or prefix for "
                                      f"{spec.name}") from None
            elif spec.kind == "mac":
                mac = v.replace(":", "").replace("-", "").upper()
                if not re.fullmatch(r"[0-9A-F]{12}", mac):
                    raise FilterError(f"filter: {v!r} is not a MAC address for {spec.name}")
                exact.append(mac)
            elif spec.kind == "number":
                try:
                    exact.append(str(int(v, 0)))
                except ValueError:
                    raise FilterError(f"filter: {v!r} is not a number for {spec.name}") from None
            else:
                exact.append(v)
    return _Cmp(spec, op, exact, regexes, nets)


MAX_PATTERN = 256


def _nested_repeat(items: Any, inside: bool = False) -> bool:
    """Whether a parsed pattern repeats (``+``, ``*``, ``{n,}``) something that itself repeats."""
    for op, av in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            _, hi, sub = av
            big = hi is _sre.MAXREPEAT or hi > 1
            if (big and inside) or _nested_repeat(sub, inside or big):
                return True
        elif op is _sre.SUBPATTERN:
            if _nested_repeat(av[-1], inside):
                return True
        elif op is _sre.BRANCH:
            if any(_nested_repeat(b, inside) for b in av[1]):
                return True
    return False


def _compile_match(v: str) -> re.Pattern[str]:
    """A ``~`` pattern (sFlow-RT: a regular expression matched against the key text), refused when
    it could backtrack catastrophically (nested unbounded repetition such as ``(a+)+``): filters
    run on the ingest path, so a pattern must never be able to stall it."""
    if len(v) > MAX_PATTERN:
        raise FilterError(f"filter: regular expression longer than {MAX_PATTERN} characters")
    try:
        rx = re.compile(v)
        nested = _nested_repeat(_sre_parse.parse(v))
    except re.error as exc:
        raise FilterError(f"filter: bad regular expression {v!r}: {exc}") from None
    if nested:
        raise FilterError(f"filter: regular expression {v!r} repeats a repetition (e.g. (a+)+), "
                          "which can backtrack catastrophically; write it without nesting")
    return rx


def parse_filter(text: str | None) -> Filter | None:
    """A :class:`Filter` for ``text``, None for an empty/absent filter; :class:`FilterError` if bad."""
    if text is None or not str(text).strip():
        return None
    return Filter(str(text))
