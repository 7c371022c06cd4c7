"""The classic BPF program that gives each QUIC packet to its worker.

Linux lets the sockets of one ``SO_REUSEPORT`` group share a port, and a
classic BPF program attached with ``SO_ATTACH_REUSEPORT_CBPF`` choose, for
each datagram, which of them receives it: the program returns an index into
the group (the order in which the sockets joined it); an index out of range
makes the kernel fall back to its own hash of the address 4-tuple. For UDP the
program sees the datagram from the start of its payload, the QUIC packet.

The program reads the destination connection ID in the QUIC-LB layout
(:class:`~trioquic.QuicLbConfig`): worker ``i`` issues IDs whose server ID's
last octet is ``base + i``. So every packet of a connection reaches the
worker that holds it, whatever address it comes from (NAT rebinding,
migration). Packets that carry no such ID are spread otherwise::

    short header, ID of ours             -> its worker
    short header, anything else          -> the kernel's 4-tuple hash (any
                                            worker answers with the shared
                                            stateless reset key)
    long header, ID of ours              -> its worker (a client's Initial
                                            after our first answer, its
                                            Handshake packets, after a Retry)
    long header, the client's own ID     -> first 4 octets of that ID
                                            modulo the workers: every
                                            datagram of a first flight
                                            (a ClientHello can span two, and
                                            0-RTT follows) reaches the same
                                            worker
"""

from __future__ import annotations

import ctypes
import socket
import struct

import attrs

__all__ = ["Instruction", "attach_reuseport_program", "reuseport_program"]

# Classic BPF (linux/filter.h, linux/bpf_common.h).
BPF_LD, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x04, 0x05, 0x06
BPF_W, BPF_B = 0x00, 0x10
BPF_ABS = 0x20
BPF_SUB, BPF_AND, BPF_MOD = 0x10, 0x50, 0x90
BPF_JEQ, BPF_JGE, BPF_JSET = 0x10, 0x30, 0x40
BPF_K, BPF_A = 0x00, 0x10
#: linux/asm-generic/socket.h; Python's socket module does not name it.
SO_ATTACH_REUSEPORT_CBPF = 51
#: An index no group has: the kernel then picks by its 4-tuple hash.
KERNEL_HASH = 0xFFFFFFFF


@attrs.frozen
class Instruction:
    """One ``struct sock_filter``: opcode, jump-if-true and jump-if-false
    offsets (instructions to skip), constant."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0
    #: What it does, for people reading the program.
    comment: str = attrs.field(default="", eq=False)

    def pack(self) -> bytes:
        return struct.pack("=HBBI", self.code, self.jt, self.jf, self.k)


class _Assembler:
    """Instructions with symbolic forward jumps, resolved at the end."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | None, str | None, int, str]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def op(self, code: int, k: int = 0, comment: str = "") -> None:
        self._code.append((code, None, None, k, comment))

    def jump(
        self, code: int, k: int, true: str | None, false: str | None, comment: str
    ) -> None:
        self._code.append((code, true, false, k, comment))

    def assemble(self) -> list[Instruction]:
        out = []
        for position, (code, true, false, k, comment) in enumerate(self._code):
            jt = self._offset(position, true)
            jf = self._offset(position, false)
            out.append(Instruction(code, jt, jf, k, comment))
        return out

    def _offset(self, position: int, label: str | None) -> int:
        if label is None:
            return 0  # fall through to the next instruction
        offset = self._labels[label] - position - 1
        assert 0 <= offset <= 255, (label, offset)
        return offset


def reuseport_program(
    *,
    workers: int,
    connection_id_length: int,
    server_id_length: int,
    config_rotation: int,
    base: int,
) -> list[Instruction]:
    """The program for ``workers`` sockets whose connection IDs are
    ``connection_id_length`` octets, with a server ID of ``server_id_length``
    octets whose last octet is ``base`` + the worker's index, under config
    rotation ``config_rotation``."""
    if not 1 <= workers <= 256 - base:
        raise ValueError(f"workers must be 1 to {256 - base}, got {workers}")
    if not 1 <= server_id_length < connection_id_length <= 20:
        raise ValueError("the server ID must fit in the connection ID")
    asm = _Assembler()

    def route_by_server_id(cid_offset: int, miss: str) -> None:
        """The worker named by a CID at ``cid_offset``, else jump to ``miss``."""
        first, last = cid_offset, cid_offset + server_id_length
        asm.op(BPF_LD | BPF_B | BPF_ABS, first, "A = first octet of the CID")
        asm.op(BPF_ALU | BPF_AND | BPF_K, 0xE0, "A &= config rotation bits")
        asm.jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            config_rotation << 5,
            None,
            miss,
            "our configuration?",
        )
        asm.op(BPF_LD | BPF_B | BPF_ABS, last, "A = last octet of the server ID")
        asm.op(BPF_ALU | BPF_SUB | BPF_K, base, "A -= the first worker's octet")
        asm.jump(BPF_JMP | BPF_JGE | BPF_K, workers, miss, "index", "A >= workers?")

    asm.op(BPF_LD | BPF_B | BPF_ABS, 0, "A = first byte of the QUIC packet")
    asm.jump(BPF_JMP | BPF_JSET | BPF_K, 0x80, "long", None, "long header?")
    # Short header: the destination CID starts at byte 1.
    route_by_server_id(1, "kernel")
    # Long header: byte 5 is the destination CID's length, the CID follows.
    asm.label("long")
    asm.op(BPF_LD | BPF_B | BPF_ABS, 5, "A = destination CID length")
    asm.jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        connection_id_length,
        None,
        "hash",
        "our connection ID length?",
    )
    route_by_server_id(6, "hash")
    # A client's own connection ID: the same worker for all its first flight.
    asm.label("hash")
    asm.op(BPF_LD | BPF_W | BPF_ABS, 6, "A = first 4 octets of the client's CID")
    asm.op(BPF_ALU | BPF_MOD | BPF_K, workers, "A %= workers")
    asm.label("index")
    asm.op(BPF_RET | BPF_A, 0, "deliver to socket A of the group")
    asm.label("kernel")
    asm.op(BPF_RET | BPF_K, KERNEL_HASH, "out of range: the kernel's 4-tuple hash")
    return asm.assemble()


def attach_reuseport_program(sock: socket.socket, program: list[Instruction]) -> None:
    """Attach ``program`` to the ``SO_REUSEPORT`` group of ``sock`` (bound);
    every socket of the group, joined before or after, shares it."""
    filters = ctypes.create_string_buffer(b"".join(i.pack() for i in program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HP", len(program), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def describe(program: list[Instruction]) -> str:
    """The program as annotated assembly, in the notation of the kernel's
    ``bpf_asm`` (what the scaling guide shows)."""
    lines = []
    for index, ins in enumerate(program):
        lines.append(f"{index:2}: {_mnemonic(index, ins):<28} ; {ins.comment}")
    return "\n".join(lines)


def _mnemonic(index: int, ins: Instruction) -> str:
    cls = ins.code & 0x07
    if cls == BPF_LD:
        op = {BPF_B: "ldb", BPF_W: "ld"}[ins.code & 0x18]
        return f"{op} [{ins.k}]"
    if cls == BPF_ALU:
        op = {BPF_SUB: "sub", BPF_AND: "and", BPF_MOD: "mod"}[ins.code & 0xF0]
        return f"{op} #{ins.k:#x}" if op == "and" else f"{op} #{ins.k}"
    if cls == BPF_JMP:
        op = {BPF_JEQ: "jeq", BPF_JGE: "jge", BPF_JSET: "jset"}[ins.code & 0xF0]
        k = f"#{ins.k:#x}" if op != "jge" else f"#{ins.k}"
        return f"{op} {k}, {index + 1 + ins.jt}, {index + 1 + ins.jf}"
    if ins.code & 0x18 == BPF_A:
        return "ret a"
    return f"ret #{ins.k:#x}"
