"""Collective communication on a two-level interconnect: nodes of fast links joined by a network.

A node holds ``node_size`` devices on one fast link (NVLink/NVSwitch, Infinity Fabric, ICI) of
``link_bw`` bytes/s per device and direction; nodes are joined by a network (InfiniBand,
Ethernet) of ``net_bw`` bytes/s per device (one NIC per device, as in DGX/HGX systems). A
collective over ``p`` devices spans ``N = ceil(p / node_size)`` nodes with ``ppn = min(p,
node_size)`` devices in each (devices are placed node by node).

Each collective costs a fixed latency ``α = link_latency`` (kernel launch and synchronization),
a latency per sequential step on each level (``link_hop_latency``, ``net_latency``) and a
bandwidth term; the step counts and the algorithm choice follow NCCL's own cost model
(NVIDIA/nccl ``src/graph/tuning.cc``, ``ncclTopoTuneModel``: ring all-reduce ``2(p−1)`` steps of
which ``2(N−1)`` cross the network; tree all-reduce ``2((ppn−1) + log2 N)`` steps; NCCL runs the
algorithm its model predicts to be faster, so dse takes the minimum):

- all-reduce, ring: ``α + 2(p−N)·λ_link + 2(N−1)·λ_net + 2(p−1)/p · n / β``
  (Thakur, Rabenseifner and Gropp 2005 for the bandwidth term);
- all-reduce, tree (double binary tree between nodes, a chain inside each):
  ``α + 2((ppn−1)·λ_link + ceil(log2 N)·λ_net) + 2n / β`` (NCCL's tree algorithm bandwidth is half
  the bus bandwidth);
- all-gather (and reduce-scatter) of n bytes in total, ring: ``α + (p−N)·λ_link + (N−1)·λ_net +
  (p−1)/p · n / β``;
- all-to-all of n bytes per device: ``α + λ + max((ppn−1)/p · n / link_bw, (p−ppn)/p · n / net_bw)``
  (every pair at once; the share for devices of other nodes leaves through the device's NIC);
- point-to-point of n bytes: ``α + λ + n / (link_bw or net_bw)``.

``β`` is ``link_bw`` inside a node; across nodes NCCL builds one ring (tree) per NIC, so the node's
``ppn`` rings share the data and each crosses the network through its own NIC: ``β = min(link_bw,
ppn · net_bw)`` — the slowest of the two levels, per device.

Every term is a named, physical hardware field, so it can be fitted to measurements
(``dse.measure``) without constants per row.
"""
from __future__ import annotations

import jax.numpy as jnp

from dse.core.hardware import Hardware

#: numeric codes of the collectives (the same as ``dse.core.ops.COLLECTIVE``)
ALL_REDUCE, ALL_TO_ALL, P2P, ALL_GATHER = 0.0, 1.0, 2.0, 3.0

_TINY = 1e-30


def placement(p, hw: Hardware):
    """(nodes spanned N, devices per node ppn) of a group of ``p`` devices placed node by node."""
    p = jnp.maximum(p, 1.0)
    size = jnp.maximum(hw.node_size, 1.0)
    return jnp.ceil(p / size - 1e-9), jnp.minimum(p, size)


def group_bandwidth(p, hw: Hardware):
    """Bytes/s per device of a ring or tree over ``p`` devices: the link, or the slower of link and NICs."""
    nodes, ppn = placement(p, hw)
    cross = jnp.minimum(hw.link_bw, ppn * hw.net_bw)
    return jnp.maximum(jnp.where(nodes > 1, cross, hw.link_bw), _TINY)


def all_reduce_time(n, p, hw: Hardware):
    """Seconds to all-reduce ``n`` bytes per device over ``p`` devices: the faster of ring and tree."""
    p = jnp.maximum(p, 1.0)
    nodes, ppn = placement(p, hw)
    bw = group_bandwidth(p, hw)
    ring = (hw.link_latency + 2.0 * (p - nodes) * hw.link_hop_latency + 2.0 * (nodes - 1.0) * hw.net_latency
            + 2.0 * (p - 1.0) / p * n / bw)
    depth = jnp.ceil(jnp.log2(jnp.maximum(nodes, 1.0)) - 1e-9)
    tree = (hw.link_latency + 2.0 * ((ppn - 1.0) * hw.link_hop_latency + depth * hw.net_latency)
            + 2.0 * n / bw)
    return jnp.where((p > 1) & (n > 0), jnp.minimum(ring, tree), 0.0)


def all_gather_time(n, p, hw: Hardware):
    """Seconds to all-gather ``n`` bytes in total (n/p from each device) over ``p`` devices (ring)."""
    p = jnp.maximum(p, 1.0)
    nodes, _ = placement(p, hw)
    t = (hw.link_latency + (p - nodes) * hw.link_hop_latency + (nodes - 1.0) * hw.net_latency
         + (p - 1.0) / p * n / group_bandwidth(p, hw))
    return jnp.where((p > 1) & (n > 0), t, 0.0)


def all_to_all_time(n, p, hw: Hardware):
    """Seconds for an all-to-all of ``n`` bytes per device over ``p`` devices (1/p of it stays)."""
    p = jnp.maximum(p, 1.0)
    nodes, ppn = placement(p, hw)
    intra = (ppn - 1.0) / p * n / jnp.maximum(hw.link_bw, _TINY)
    inter = (p - ppn) / p * n / jnp.maximum(hw.net_bw, _TINY)
    hop = jnp.where(nodes > 1, hw.net_latency, hw.link_hop_latency)
    t = hw.link_latency + hop + jnp.maximum(intra, jnp.where(nodes > 1, inter, 0.0))
    return jnp.where((p > 1) & (n > 0), t, 0.0)


def p2p_time(n, cross_node, hw: Hardware):
    """Seconds to send ``n`` bytes to one peer, over the network when ``cross_node`` (0/1) else the link."""
    bw = jnp.where(cross_node > 0, hw.net_bw, hw.link_bw)
    hop = jnp.where(cross_node > 0, hw.net_latency, hw.link_hop_latency)
    return jnp.where(n > 0, hw.link_latency + hop + n / jnp.maximum(bw, _TINY), 0.0)


def collective_time(n, p, kind, hw: Hardware):
    """Seconds of the collective ``kind`` (a COLLECTIVE code) on ``n`` bytes over ``p`` devices.

    For ``p2p`` the group is the span of devices between sender and receiver (placed node by
    node): the transfer crosses the network when it exceeds ``node_size``.
    """
    nodes, _ = placement(p, hw)
    if isinstance(kind, (int, float)):  # the kind is known when the op is built: trace one formula
        return {ALL_REDUCE: lambda: all_reduce_time(n, p, hw), ALL_TO_ALL: lambda: all_to_all_time(n, p, hw),
                P2P: lambda: p2p_time(n, (nodes > 1) * 1.0, hw), ALL_GATHER: lambda: all_gather_time(n, p, hw)}[kind]()
    return jnp.where(kind == ALL_REDUCE, all_reduce_time(n, p, hw),
                     jnp.where(kind == ALL_TO_ALL, all_to_all_time(n, p, hw),
                               jnp.where(kind == P2P, p2p_time(n, (nodes > 1) * 1.0, hw),
                                         all_gather_time(n, p, hw))))
