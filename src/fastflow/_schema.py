"""The decoded tables: numpy dtypes, record layouts and rejection reasons.

This module is the contract between the decoders (the Cython one in ``_decode.pyx`` and the pure-Python
reference in ``_pydecode.py``) and everything downstream (store, metrics, flows, CLI). Both decoders
produce exactly these tables; one test suite checks that they agree row for row.

Three tables come out of a batch of datagrams:

* ``DATAGRAM_DTYPE``: one row per datagram whose header was valid.
* ``COUNTER_DTYPE``: one row per counter sample (0:2 and expanded 0:4). Every counter record fastflow
  knows has its fields as columns; ``mask`` says which records were present (bit ``1 << COUNTER_BIT[name]``).
  Columns of records that were absent are zero. Values are as sent, including all-ones "unknown".
* ``FLOW_DTYPE``: one row per flow sample (0:1 and expanded 0:3), with the sampled header decoded to
  Ethernet/VLAN/IP/L4 columns.

Strings (hostnames, os_release) are interned: a column holds an index into the decoder's string table
(index 0 is the empty string, meaning "absent"). Agent addresses are interned the same way into the
decoder's agent table. Both tables live as long as the decoder, so indices are stable across batches.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

# --------------------------------------------------------------------------------------------------
# Rejection / skip reasons. Index = code. ``kind`` is "error" (malformed input: something was
# dropped or trimmed) or "skip" (well-formed input that fastflow does not decode, skipped by length).
# --------------------------------------------------------------------------------------------------
REASONS: Final[tuple[tuple[str, str, str], ...]] = (
    # (name, kind, description)
    ("ok", "ok", "no problem"),
    ("truncated_header", "error", "datagram shorter than its header; datagram dropped"),
    ("bad_version", "error", "datagram version is not 5; datagram dropped"),
    ("bad_agent_address", "error", "agent address type is not 0, 1 or 2; datagram dropped"),
    ("sample_overrun", "error", "a sample's header or length runs past the end of the datagram; "
     "it and the samples after it are dropped, earlier samples kept"),
    ("sample_too_short", "error", "a sample's length is shorter than its fixed part; sample dropped"),
    ("record_overrun", "error", "a record's header or length runs past the end of its sample, or "
     "num_records is more than the sample holds; sample dropped"),
    ("record_too_short", "error", "a known record is shorter than its fixed layout or holds a bad "
     "string/array length; that record ignored, rest of the sample kept"),
    ("trailing_bytes", "error", "bytes left after the declared samples; they are ignored"),
    ("unknown_sample", "skip", "sample type fastflow does not decode; skipped by its length"),
    ("unknown_record", "skip", "record type fastflow does not decode; skipped by its length"),
    # 0:5 discarded-packet events decode into flow rows (discard=1) since v0.2; the code stays so
    # that the numbering is stable, and is no longer counted.
    ("discard_event", "skip", "(unused) 0:5 discarded-packet events are decoded as flow rows"),
    ("table_full", "error", "string or agent table full; the string is recorded as absent"),
)
REASON_NAMES: Final[tuple[str, ...]] = tuple(r[0] for r in REASONS)
REASON_CODE: Final[dict[str, int]] = {name: i for i, name in enumerate(REASON_NAMES)}
N_REASONS: Final[int] = len(REASONS)

# Capacity limits of the intern tables (strings and agents each).
MAX_INTERNED: Final[int] = 1 << 20

# --------------------------------------------------------------------------------------------------
# Datagram table
# --------------------------------------------------------------------------------------------------
DATAGRAM_DTYPE: Final = np.dtype(
    [
        ("ts", "<f8"),            # capture / receive time, epoch seconds (0 when unknown)
        ("agent", "<u4"),         # index into the agent table
        ("sub_agent_id", "<u4"),
        ("sequence_number", "<u4"),
        ("uptime", "<u4"),        # ms since agent boot
        ("num_samples", "<u4"),   # as declared in the header
        ("n_counters", "<u2"),    # counter-sample rows this datagram produced
        ("n_flows", "<u2"),       # flow-sample rows this datagram produced
        ("length", "<u4"),        # datagram length in bytes
        ("status", "u1"),         # first error reason (REASON_CODE) met in this datagram, 0 if clean
        ("agent_af", "u1"),       # 4, 6, or 0 for an "unknown" (type 0) agent address
    ]
)

# --------------------------------------------------------------------------------------------------
# Counter records. Each entry: (format, name, min_length, fields).
# A field is (json_name, column, wire_offset, wire_type). wire_type is one of
#   "u32", "u64", "i32", "f32"          fixed scalars, big-endian on the wire
#   "uuid16"                            16 raw bytes (column dtype ('u1', 16))
#   "str"                               XDR string interned into the string table (column <u4)
#   "count"                             host_adapters: number of adapters (column <u4)
# ``wire_offset`` is None for fields whose position is not fixed (host_descr after its hostname,
# host_adapters); the decoders hand-code those two records. Fixed fields with wire_offset >=
# min_length are an optional tail (host_cpu's steal/guest/guest_nice): present only when the record
# is long enough, otherwise 0. A record longer than min_length is fine (agents append fields).
# --------------------------------------------------------------------------------------------------
Field = tuple[str, str, int | None, str]
CounterRecord = tuple[int, str, int, tuple[Field, ...]]


def _fixed(prefix: str, spec: str, start: int = 0) -> tuple[Field, ...]:
    """Fields laid out back to back: spec = "name:type name:type ..."."""
    out: list[Field] = []
    off = start
    for item in spec.split():
        name, typ = item.split(":")
        out.append((name, f"{prefix}{name}", off, typ))
        off += 8 if typ == "u64" else 4
    return tuple(out)


COUNTER_RECORDS: Final[tuple[CounterRecord, ...]] = (
    (1, "if_counters", 88, _fixed("", (
        "if_index:u32 if_type:u32 if_speed:u64 if_direction:u32 if_status:u32 "
        "if_in_octets:u64 if_in_ucast_pkts:u32 if_in_multicast_pkts:u32 if_in_broadcast_pkts:u32 "
        "if_in_discards:u32 if_in_errors:u32 if_in_unknown_protos:u32 "
        "if_out_octets:u64 if_out_ucast_pkts:u32 if_out_multicast_pkts:u32 "
        "if_out_broadcast_pkts:u32 if_out_discards:u32 if_out_errors:u32 if_promiscuous_mode:u32"))),
    (2, "ethernet_counters", 52, _fixed("", (
        "dot3_stats_alignment_errors:u32 dot3_stats_fcs_errors:u32 "
        "dot3_stats_single_collision_frames:u32 dot3_stats_multiple_collision_frames:u32 "
        "dot3_stats_sqe_test_errors:u32 dot3_stats_deferred_transmissions:u32 "
        "dot3_stats_late_collisions:u32 dot3_stats_excessive_collisions:u32 "
        "dot3_stats_internal_mac_transmit_errors:u32 dot3_stats_carrier_sense_errors:u32 "
        "dot3_stats_frame_too_longs:u32 dot3_stats_internal_mac_receive_errors:u32 "
        "dot3_stats_symbol_errors:u32"))),
    # host_descr: hostname string<64>, uuid 16 raw bytes (no length word), machine_type u32,
    # os_name u32, os_release string<32>. Hand-coded (variable layout).
    (2000, "host_descr", 4 + 16 + 8 + 4, (
        ("hostname", "hostname", None, "str"),
        ("uuid", "uuid", None, "uuid16"),
        ("machine_type", "machine_type", None, "u32"),
        ("os_name", "os_name", None, "u32"),
        ("os_release", "os_release", None, "str"),
    )),
    # host_adapters: count u32, then per adapter ifIndex u32, mac_count u32, mac_count x 8 bytes.
    # Only the adapter count is a column; the object decoder (decode()) lists every adapter.
    (2001, "host_adapters", 4, (("adapters", "adapters", None, "count"),)),
    (2002, "host_parent", 8, _fixed("", "container_type:u32 container_index:u32")),
    (2003, "host_cpu", 68, (
        ("load_one", "load_one", 0, "f32"),
        ("load_five", "load_five", 4, "f32"),
        ("load_fifteen", "load_fifteen", 8, "f32"),
    ) + _fixed("", (
        "proc_run:u32 proc_total:u32 cpu_num:u32 cpu_speed:u32"), 12)
      + (("uptime", "host_uptime", 28, "u32"),)
      + _fixed("", (
        "cpu_user:u32 cpu_nice:u32 cpu_system:u32 cpu_idle:u32 cpu_wio:u32 cpu_intr:u32 "
        "cpu_sintr:u32 interrupts:u32 contexts:u32 cpu_steal:u32 cpu_guest:u32 cpu_guest_nice:u32"),
        32)),
    (2004, "host_memory", 72, _fixed("", (
        "mem_total:u64 mem_free:u64 mem_shared:u64 mem_buffers:u64 mem_cached:u64 "
        "swap_total:u64 swap_free:u64 page_in:u32 page_out:u32 swap_in:u32 swap_out:u32"))),
    (2005, "host_disk_io", 52, _fixed("", (
        "disk_total:u64 disk_free:u64 part_max_used:i32 reads:u32 bytes_read:u64 read_time:u32 "
        "writes:u32 bytes_written:u64 write_time:u32"))),
    (2006, "host_net_io", 40, _fixed("", (
        "bytes_in:u64 pkts_in:u32 errs_in:u32 drops_in:u32 bytes_out:u64 packets_out:u32 "
        "errs_out:u32 drops_out:u32"))),
    (2007, "mib2_ip_group", 76, _fixed("", (
        "ip_forwarding:u32 ip_default_ttl:u32 ip_in_receives:u32 ip_in_hdr_errors:u32 "
        "ip_in_addr_errors:u32 ip_forw_datagrams:u32 ip_in_unknown_protos:u32 ip_in_discards:u32 "
        "ip_in_delivers:u32 ip_out_requests:u32 ip_out_discards:u32 ip_out_no_routes:u32 "
        "ip_reasm_timeout:u32 ip_reasm_reqds:u32 ip_reasm_oks:u32 ip_reasm_fails:u32 "
        "ip_frag_oks:u32 ip_frag_fails:u32 ip_frag_creates:u32"))),
    (2008, "mib2_icmp_group", 100, _fixed("", (
        "icmp_in_msgs:u32 icmp_in_errors:u32 icmp_in_dest_unreachs:u32 icmp_in_time_excds:u32 "
        "icmp_in_param_probs:u32 icmp_in_src_quenchs:u32 icmp_in_redirects:u32 icmp_in_echos:u32 "
        "icmp_in_echo_reps:u32 icmp_in_timestamps:u32 icmp_in_addr_masks:u32 "
        "icmp_in_addr_mask_reps:u32 icmp_out_msgs:u32 icmp_out_errors:u32 "
        "icmp_out_dest_unreachs:u32 icmp_out_time_excds:u32 icmp_out_param_probs:u32 "
        "icmp_out_src_quenchs:u32 icmp_out_redirects:u32 icmp_out_echos:u32 "
        "icmp_out_echo_reps:u32 icmp_out_timestamps:u32 icmp_out_timestamp_reps:u32 "
        "icmp_out_addr_masks:u32 icmp_out_addr_mask_reps:u32"))),
    (2009, "mib2_tcp_group", 60, _fixed("", (
        "tcp_rto_algorithm:u32 tcp_rto_min:u32 tcp_rto_max:u32 tcp_max_conn:u32 "
        "tcp_active_opens:u32 tcp_passive_opens:u32 tcp_attempt_fails:u32 tcp_estab_resets:u32 "
        "tcp_curr_estab:u32 tcp_in_segs:u32 tcp_out_segs:u32 tcp_retrans_segs:u32 "
        "tcp_in_errs:u32 tcp_out_rsts:u32 tcp_in_csum_errors:u32"))),
    (2010, "mib2_udp_group", 28, _fixed("", (
        "udp_in_datagrams:u32 udp_no_ports:u32 udp_in_errors:u32 udp_out_datagrams:u32 "
        "udp_rcvbuf_errors:u32 udp_sndbuf_errors:u32 udp_in_csum_errors:u32"))),
    (2100, "virt_node", 28, _fixed("vnode_", (
        "mhz:u32 cpus:u32 memory:u64 memory_free:u64 num_domains:u32"))),
    (2101, "virt_cpu", 12, _fixed("vcpu_", "state:u32 cpu_time:u32 nr_virt_cpu:u32")),
    (2102, "virt_memory", 16, _fixed("vmem_", "memory:u64 max_memory:u64")),
    (2103, "virt_disk_io", 52, _fixed("vdsk_", (
        "capacity:u64 allocation:u64 available:u64 rd_req:u32 rd_bytes:u64 wr_req:u32 "
        "wr_bytes:u64 errs:u32"))),
    (2104, "virt_net_io", 40, _fixed("vnet_", (
        "rx_bytes:u64 rx_packets:u32 rx_errs:u32 rx_drop:u32 tx_bytes:u64 tx_packets:u32 "
        "tx_errs:u32 tx_drop:u32"))),
    # if_name (port name, 0:1005): string if_name<255>; hsflowd sends it with every interface
    # sample. Hand-coded (a string). Last in the tuple so the earlier mask bits keep their values.
    (1005, "if_name", 4, (("if_name", "ifname", None, "str"),)),
)

COUNTER_RECORD_BY_FORMAT: Final[dict[int, CounterRecord]] = {r[0]: r for r in COUNTER_RECORDS}
COUNTER_RECORD_BY_NAME: Final[dict[str, CounterRecord]] = {r[1]: r for r in COUNTER_RECORDS}
# mask bit of each counter record (by name and by format number)
COUNTER_BIT: Final[dict[str, int]] = {r[1]: i for i, r in enumerate(COUNTER_RECORDS)}
COUNTER_BIT_BY_FORMAT: Final[dict[int, int]] = {r[0]: i for i, r in enumerate(COUNTER_RECORDS)}

_WIRE_NP = {"u32": "<u4", "u64": "<u8", "i32": "<i4", "f32": "<f4", "str": "<u4", "count": "<u4"}


def _counter_dtype() -> np.dtype:
    cols: list[tuple] = [
        ("ts", "<f8"),              # datagram's ts
        ("agent", "<u4"),           # index into the agent table
        ("sub_agent_id", "<u4"),
        ("uptime", "<u4"),          # datagram's uptime (ms)
        ("dgram", "<u4"),           # row of the datagram in this batch's datagram table
        ("sequence_number", "<u4"), # sample sequence number
        ("source_id", "<u4"),       # class << 24 | index (expanded form folded in; index < 2**24)
        ("source_id_type", "<u4"),  # class (kept whole for expanded samples)
        ("source_id_index", "<u4"), # index (kept whole for expanded samples)
        ("mask", "<u4"),            # 1 << COUNTER_BIT[name] for each record present
        ("expanded", "u1"),         # 1 for 0:4 samples
    ]
    for _fmt, _name, _minlen, fields in COUNTER_RECORDS:
        for _json, col, _off, typ in fields:
            if typ == "uuid16":
                cols.append((col, "u1", (16,)))
            else:
                cols.append((col, _WIRE_NP[typ]))
    return np.dtype(cols)  # packed (align=False): the Cython decoder writes by offset


COUNTER_DTYPE: Final = _counter_dtype()

# --------------------------------------------------------------------------------------------------
# Columnar (narrow) counter tables: what ``read_pcap`` returns. Sized to the data: one
# ``SAMPLE_DTYPE`` row per counter sample (the columns every sample has), plus one table per counter
# record type actually present, ``RECORD_DTYPES[name]``: a ``sample`` column (row in the sample
# table) and that record's columns only. A sample's record row exists exactly when its ``mask`` has
# the record's bit, so the wide ``COUNTER_DTYPE`` row of a sample is the join of the two
# (:func:`split_counters` / :func:`join_counters` convert; the tests hold the decoders to both).
# --------------------------------------------------------------------------------------------------
SAMPLE_COLUMNS: Final[tuple[str, ...]] = (
    "ts", "agent", "sub_agent_id", "uptime", "dgram", "sequence_number", "source_id",
    "source_id_type", "source_id_index", "mask", "expanded")
_COUNTER_FIELDS: Final[Any] = COUNTER_DTYPE.fields
SAMPLE_DTYPE: Final = np.dtype([(name, _COUNTER_FIELDS[name][0]) for name in SAMPLE_COLUMNS])


def _record_dtype(fields: tuple[Field, ...]) -> np.dtype:
    cols: list[tuple[str, Any]] = [("sample", "<u4")]  # row of the sample in the sample table
    for _json, col, _off, _typ in fields:
        cols.append((col, _COUNTER_FIELDS[col][0]))
    return np.dtype(cols)


RECORD_DTYPES: Final[dict[str, np.dtype]] = {r[1]: _record_dtype(r[3]) for r in COUNTER_RECORDS}


def split_counters(wide: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Wide ``COUNTER_DTYPE`` rows -> (``SAMPLE_DTYPE`` rows, {record name: its rows}).

    Only records present in some sample get a table (as the columnar decoder does).
    """
    samples = np.empty(len(wide), SAMPLE_DTYPE)
    for name in SAMPLE_COLUMNS:
        samples[name] = wide[name]
    records: dict[str, np.ndarray] = {}
    mask = wide["mask"]
    for _fmt, name, _min, fields in COUNTER_RECORDS:
        rows = np.flatnonzero(mask & np.uint32(1 << COUNTER_BIT[name]))
        if len(rows) == 0:
            continue
        t = np.empty(len(rows), RECORD_DTYPES[name])
        t["sample"] = rows
        for _json, col, _off, _typ in fields:
            t[col] = wide[col][rows]
        records[name] = t
    return samples, records


def join_counters(samples: np.ndarray, records: dict[str, np.ndarray]) -> np.ndarray:
    """The inverse of :func:`split_counters`: one wide ``COUNTER_DTYPE`` row per sample."""
    wide = np.zeros(len(samples), COUNTER_DTYPE)
    for name in SAMPLE_COLUMNS:
        wide[name] = samples[name]
    for t in records.values():
        rows = t["sample"]
        for col in t.dtype.names or ():
            if col != "sample":
                wide[col][rows] = t[col]
    return wide

# --------------------------------------------------------------------------------------------------
# Flow samples
# --------------------------------------------------------------------------------------------------
FLOW_RECORDS: Final[dict[int, str]] = {
    1: "sampled_header",
    2: "sampled_ethernet",
    3: "sampled_ipv4",
    4: "sampled_ipv6",
    1001: "extended_switch",
    1002: "extended_router",
    1003: "extended_gateway",
}
FLOW_BIT: Final[dict[str, int]] = {name: i for i, name in enumerate(FLOW_RECORDS.values())}
FLOW_BIT_BY_FORMAT: Final[dict[int, int]] = {fmt: i for i, fmt in enumerate(FLOW_RECORDS)}

FLOW_DTYPE: Final = np.dtype(
    [
        ("ts", "<f8"),
        ("agent", "<u4"),
        ("sub_agent_id", "<u4"),
        ("uptime", "<u4"),
        ("dgram", "<u4"),
        ("sequence_number", "<u4"),
        ("source_id", "<u4"),        # class << 24 | index
        ("source_id_type", "<u4"),
        ("source_id_index", "<u4"),
        ("sampling_rate", "<u4"),
        ("sample_pool", "<u4"),
        ("drops", "<u4"),
        ("input", "<u4"),            # interface word: format << 30 | value (expanded form folded)
        ("output", "<u4"),
        ("mask", "<u4"),             # 1 << FLOW_BIT[name] for each record present
        ("expanded", "u1"),
        ("discard", "u1"),           # 1 for a 0:5 discarded-packet event, 0 for a flow sample
        ("discard_reason", "<u4"),   # the event's drop reason (0 for flow samples)
        # sampled_header (first one in the sample wins)
        ("header_protocol", "<u4"),
        ("frame_length", "<u4"),     # header's frame_length; else sampled_ethernet / ipv4 / ipv6 length
        ("stripped", "<u4"),
        ("header_length", "<u4"),
        # decoded from the header, else from sampled_ethernet / sampled_ipv4 / sampled_ipv6
        ("eth_src", "<u8"),          # 48-bit MAC as an integer (first byte most significant)
        ("eth_dst", "<u8"),
        ("eth_type", "<u2"),         # innermost ethertype (after VLAN tags)
        ("vlan", "<u2"),             # outer 802.1Q VLAN id (0 = untagged)
        ("inner_vlan", "<u2"),       # inner VLAN id for QinQ (0 = none)
        ("ip_version", "u1"),        # 4, 6 or 0
        ("ip_protocol", "u1"),
        ("ip_src", "u1", (16,)),     # IPv6 bytes; IPv4 as ::ffff:a.b.c.d
        ("ip_dst", "u1", (16,)),
        ("ip_tos", "u1"),            # IPv4 TOS / IPv6 traffic class
        ("ip_ttl", "u1"),            # IPv4 TTL / IPv6 hop limit
        ("ip_length", "<u2"),        # IPv4 total length / IPv6 payload length + 40
        ("src_port", "<u2"),         # TCP/UDP ports
        ("dst_port", "<u2"),
        ("tcp_flags", "u1"),
        ("icmp_type", "u1"),
        ("icmp_code", "u1"),
        ("l4_ok", "u1"),             # 1 when the L4 header was fully inside the sampled header / record
        # extended_switch
        ("src_vlan", "<u4"),
        ("src_priority", "<u4"),
        ("dst_vlan", "<u4"),
        ("dst_priority", "<u4"),
        # extended_router
        ("nexthop", "u1", (16,)),    # as ip_src; from extended_router, else extended_gateway
        ("src_mask_len", "u1"),
        ("dst_mask_len", "u1"),
        # extended_gateway
        ("as_number", "<u4"),        # the router's own AS ("as" in the spec)
        ("src_as", "<u4"),
        ("src_peer_as", "<u4"),
        ("dst_as", "<u4"),           # last AS of the last dst_as_path segment, 0 if empty
        ("dst_peer_as", "<u4"),      # first AS of the first dst_as_path segment, 0 if empty
        ("local_pref", "<u4"),
    ]
)

IPV4_MAPPED_PREFIX: Final[bytes] = b"\x00" * 10 + b"\xff\xff"
