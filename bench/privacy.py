"""Privacy amplification by Toeplitz hashing, computed exactly in GF(2)[x] with carry-less multiplication.

Family. For a key x ∈ {0,1}^n and a seed s ∈ {0,1}^(n+m−1), the output is y = T_s·x mod 2 with the m×n Toeplitz
matrix T_s[i, j] = s[i − j + n − 1]. Over uniform seeds the family is 2-universal: for x ≠ x', T_s·(x ⊕ x') is
uniform on {0,1}^m, so Pr_s[T_s·x = T_s·x'] = 2^-m (Carter & Wegman, J. Comput. Syst. Sci. 18, 143 (1979);
Krawczyk, CRYPTO '94, LNCS 839). By the leftover hash lemma against quantum side information (Tomamichel,
Schaffner, Smith, Renner, IEEE Trans. Inf. Theory 57, 5524 (2011)) the output is ε_sec-close to uniform and
independent of Eve's information once m ≤ H_min − 2·log2(1/ε_sec) (the cost that bench/finitekey.py charges).
How y is computed below changes nothing of this: every method returns the same bits T_s·x mod 2.

Seed. Alice draws it and sends it over the authenticated channel; it may be public but must be independent of
the key, and fresh for every block: the same seed on two blocks is not 2-universal for the joint output (two
equal differences collide together with probability 2^-m, not 2^-2m). The clean choice is n + m − 1 fresh
uniform bits passed as ``seed``. :func:`expand_seed` instead stretches a short seed with SHAKE-256 (FIPS 202):
the matrix is then one of at most 2^k for a k-bit short seed, the family is no longer 2-universal, and secrecy
rests on SHAKE-256 output being indistinguishable from random — computational security, at best that of the
short seed, not the information-theoretic bound above. It suits the emulator, not a security claim.

Computation. y_i is the coefficient of x^(i+n−1) in the GF(2)[x] product of the seed polynomial Σ s_k x^k and
the key polynomial Σ x_j x^j: the middle of a carry-less product. Packed into 64-bit words (the seed shifted so
that y starts on a word, q), it is a Toeplitz matrix–vector product whose entries are 64-bit polynomials: row
k of the word product is Z_k = ⊕_J clmul(S_(k−J), X_J), 128-bit carry-less products summed by XOR, and output
word w is the low half of Z_(q+w) XOR the high half of Z_(q+w−1). A square Toeplitz product of size 2h splits
into three of size h (Fan & Hasan, IEEE Trans. Comput. 56, 224 (2007); the transposed Karatsuba of Hanrot,
Quercia & Zimmermann, AAECC 14, 415 (2004)): with T = [[A, B], [C, A]] and x = (x0, x1),

    y0 = A·(x0 ⊕ x1) ⊕ (B ⊕ A)·x1,   y1 = A·(x0 ⊕ x1) ⊕ (C ⊕ A)·x0,

where A, B ⊕ A and C ⊕ A are again Toeplitz. The recursion stops at blocks of at most ``block_bits`` square,
done schoolbook by a compiled kernel (numba, cached on disk) that multiplies 8 rows at a time with the 512-bit
VPCLMULQDQ instruction (4 rows with the 256-bit one, 2 with PCLMULQDQ, whichever the CPU has; a portable kernel
shifting and XORing in software otherwise). The (m/64 + 1) × n/64 word matrix is cut into squares of the
shorter side, each zero-padded to a block size times a power of two, and the remainder likewise. Cost ∝
(n/m)·(m/64)^log2(3) word products: at n = 10^6, m = 0.45·10^6, two squares of 7168 words and five of 1408,
2.1·10^7 products of 64 × 64 bits in 5.4·10^6 VPCLMULQDQ, ~5 ms on one core of our 2-core VM (AMD EPYC,
Zen 5): pa_mbit_s ≈ 185 Mbit/s of key (``python ci/bench.py --only pa``; 125 with the 256-bit kernel, 80 with
PCLMULQDQ, 21 in software), against ~20 for the blocked float64 FFT this replaced. Two thirds of the time
is the kernel, near the instruction's throughput (~7·10^9 products/s); the rest is the recursion's XOR passes.

Why not cryptomite. CQCL's extractor library (0.3.0, on the registry) has the same Toeplitz family: its seed is
ours rotated (our s[n−1:] then s[:n−1]), and its output equals ours bit for bit at n = 10^6 (``ci/bench.py
--only pa`` checks it with the ``bench`` extra). It takes Python lists of bits and runs an integer NTT: 1.3
Mbit/s on the same machine, ~140× slower than this module and far below the 50 Mbit/s a 50 km link needs; and
its licence is non-commercial only. It stays a benchmark-only cross-check, not a dependency.

Exactness. Everything is GF(2) arithmetic on words — carry-less products, XOR, shifts, masks — with no rounding
and no approximation, so the output is T_s·x mod 2 bit for bit, for every size, block size, kernel and
number of workers; the tests check it against the matrix written out and multiplied mod 2.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

WORD_BITS = 64
_UNIT_WORDS = 8  # block sides are multiples of this: the widest kernel's rows per step
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
# kernel width (uint64 lanes of one carry-less multiply instruction) → LLVM intrinsic and the CPU features it needs
_INSTRUCTIONS = {
    8: ("llvm.x86.pclmulqdq.512", {"vpclmulqdq", "avx512f"}),
    4: ("llvm.x86.pclmulqdq.256", {"vpclmulqdq", "avx"}),
    2: ("llvm.x86.pclmulqdq", {"pclmul"}),
}


def _target_features() -> frozenset[str]:
    """CPU features numba compiles for (the host's, unless NUMBA_CPU_FEATURES says otherwise)."""
    flags = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return frozenset(f[1:] for f in flags.split(",") if f.startswith("+"))


_FEATURES = _target_features()
#: the block kernels this machine can run, fastest first, by width; 0 is the portable software kernel
KERNELS: tuple[int, ...] = (*(w for w, (_, needs) in _INSTRUCTIONS.items() if needs <= _FEATURES), 0)
KERNEL_NAMES = {8: "vpclmulqdq512", 4: "vpclmulqdq256", 2: "pclmulqdq", 0: "software"}
#: default ``block_bits`` per kernel, the fastest at n = 10^6 on our VM (bigger blocks suit faster kernels)
BLOCK_BITS = {8: 8192, 4: 4096, 2: 2048, 0: 512}


def seed_length(key_bits: int, out_bits: int) -> int:
    """Seed bits a Toeplitz matrix of ``out_bits`` × ``key_bits`` needs."""
    return key_bits + out_bits - 1


def expand_seed(seed: int, n_bits: int) -> np.ndarray:
    """``n_bits`` pseudo-random 0/1 (uint8) from SHAKE-256 of a non-negative integer (little-endian bytes).

    Deterministic; computationally secure only (see the module docstring)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if n_bits < 0:
        raise ValueError(f"n_bits must be >= 0, got {n_bits}")
    stream = hashlib.shake_256(seed.to_bytes(seed.bit_length() // 8 + 1, "little")).digest(-(-n_bits // 8))
    return np.unpackbits(np.frombuffer(stream, dtype=np.uint8), count=n_bits, bitorder="little")


def _emit_kernel(builder: ir.IRBuilder, width: int, d_addr: ir.Value, x_addr: ir.Value, y_addr: ir.Value,
                 h: ir.Value) -> None:
    """IR of the schoolbook block: y[a] = ⊕_c clmul(d[a − c + h − 1], x[c]) for a < h (h a multiple of
    ``width``), 128-bit rows stored as (low, high) word pairs. One unaligned load of ``width`` consecutive
    seed words serves ``width`` rows: the instruction multiplies the low word of each 128-bit lane by x[c]
    (immediate 0x00: rows a, a + 2, …) and then the high word (0x01: rows a + 1, a + 3, …)."""
    vec = ir.VectorType(_I64, width)
    fnty = ir.FunctionType(vec, [vec, vec, ir.IntType(8)])
    clmul = cgutils.get_or_insert_function(builder.module, fnty, _INSTRUCTIONS[width][0])
    d, x, y = (builder.inttoptr(a, _I64.as_pointer()) for a in (d_addr, x_addr, y_addr))
    even, odd = cgutils.alloca_once(builder, vec), cgutils.alloca_once(builder, vec)
    low, high = ir.Constant(ir.IntType(8), 0x00), ir.Constant(ir.IntType(8), 0x01)
    splat = ir.Constant(ir.VectorType(_I32, width), [0] * width)
    interleave = ir.Constant(ir.VectorType(_I32, 2 * width),  # rows back in order: lane i of even, then of odd
                             [k for i in range(0, width, 2) for k in (i, i + 1, width + i, width + i + 1)])
    last = builder.sub(h, ir.Constant(_I64, 1))
    with cgutils.for_range(builder, builder.udiv(h, ir.Constant(_I64, width))) as step:
        a = builder.mul(step.index, ir.Constant(_I64, width))
        builder.store(ir.Constant(vec, None), even)
        builder.store(ir.Constant(vec, None), odd)
        top = builder.add(a, last)
        with cgutils.for_range(builder, h) as col:
            window = builder.load(builder.bitcast(builder.gep(d, [builder.sub(top, col.index)]), vec.as_pointer()),
                                  align=8)
            xc = builder.load(builder.gep(x, [col.index]), align=8)
            xc = builder.shuffle_vector(builder.insert_element(ir.Constant(vec, ir.Undefined), xc,
                                                               ir.Constant(_I32, 0)),
                                        ir.Constant(vec, ir.Undefined), splat)
            builder.store(builder.xor(builder.load(even), builder.call(clmul, [window, xc, low])), even)
            builder.store(builder.xor(builder.load(odd), builder.call(clmul, [window, xc, high])), odd)
        rows = builder.shuffle_vector(builder.load(even), builder.load(odd), interleave)
        out = builder.bitcast(builder.gep(y, [builder.add(a, a)]), ir.VectorType(_I64, 2 * width).as_pointer())
        builder.store(rows, out, align=8)


def _kernel(width: int):  # type: ignore[no-untyped-def]
    """The block kernel of ``width`` as a numba intrinsic on raw addresses; empty where the CPU lacks the
    instruction (never called there: ``KERNELS`` leaves it out)."""

    @intrinsic
    def kernel(typingctx, d_addr, x_addr, y_addr, h):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            if width in KERNELS:
                _emit_kernel(builder, width, *args)
            return context.get_dummy_value()

        return types.void(types.uintp, types.uintp, types.uintp, types.intp), codegen

    return kernel


_kernel8, _kernel4, _kernel2 = _kernel(8), _kernel(4), _kernel(2)


@njit(cache=True)
def _clmul(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    """Carry-less 64 × 64 → 128-bit product (low, high), in software."""
    lo = np.uint64(0)
    hi = np.uint64(0)
    for i in range(64):
        if (b >> np.uint64(i)) & np.uint64(1):
            lo ^= a << np.uint64(i)
            hi ^= (a >> np.uint64(1)) >> np.uint64(63 - i)  # a >> (64 − i), also for i = 0
    return lo, hi


@njit(cache=True)
def _block(work: np.ndarray, d: int, x: int, y: int, h: int, kernel: int) -> None:
    """work[y: y + 2h] = the h × h Toeplitz block T[a, c] = work[d + a − c + h − 1] times work[x: x + h]
    (disjoint), schoolbook."""
    address = work.ctypes.data
    if kernel == 8:
        _kernel8(address + 8 * d, address + 8 * x, address + 8 * y, h)
    elif kernel == 4:
        _kernel4(address + 8 * d, address + 8 * x, address + 8 * y, h)
    elif kernel == 2:
        _kernel2(address + 8 * d, address + 8 * x, address + 8 * y, h)
    else:
        for a in range(h):
            lo = np.uint64(0)
            hi = np.uint64(0)
            for c in range(h):
                p_lo, p_hi = _clmul(work[d + a - c + h - 1], work[x + c])
                lo ^= p_lo
                hi ^= p_hi
            work[y + 2 * a] = lo
            work[y + 2 * a + 1] = hi


@njit(cache=True)
def _xor(work: np.ndarray, to: int, a: int, b: int, n: int) -> None:
    """work[to: to + n] = work[a: a + n] ^ work[b: b + n]."""
    for i in range(n):
        work[to + i] = work[a + i] ^ work[b + i]


@njit(cache=True)
def _square(work: np.ndarray, h: int, block: int, kernel: int) -> None:
    """The h × h word Toeplitz product for h = b·2^L with b ≤ ``block``, in ``work`` (≥ 10h words), which
    holds the defining vector d (2h − 1 words) at 0 and x (h) at 2h, and receives y = T·x (2h) at 3h,
    T[a, c] = d[a − c + h − 1].

    Each level halves the size: T = [[A, B], [C, A]], with A, B, C defined by d[g:], d[:], d[2g:], has the
    three children A·(x0 ⊕ x1), (B ⊕ A)·x1 and (C ⊕ A)·x0 (module docstring). Operands that are slices of the
    parent's are used in place; the others, and the results of the last two children, go to the next level's
    slots; the first child's result lands in the parent's y, whose halves it then fills. Depth first, the
    recursion written as a loop (numba's on-disk cache breaks recursive functions, numba issue 6061)."""
    depth = 0
    while (h >> depth) > block:
        depth += 1
    d_pos, x_pos, y_pos = np.empty(depth + 1, np.int64), np.empty(depth + 1, np.int64), np.empty(depth + 1, np.int64)
    slots = np.empty(depth + 1, np.int64)  # level l's own d (2h_l), x (h_l) and y (2h_l), h_l = h >> l
    done = np.zeros(depth + 1, np.int64)  # children of the current node at each level finished so far
    slots[0] = 0
    for level in range(1, depth + 1):
        slots[level] = 5 * h if level == 1 else slots[level - 1] + 5 * (h >> (level - 1))
    d_pos[0], x_pos[0], y_pos[0] = 0, 2 * h, 3 * h
    level = 0
    while level >= 0:
        d, x, y, size = d_pos[level], x_pos[level], y_pos[level], h >> level
        if level == depth:
            _block(work, d, x, y, size, kernel)
            level -= 1
            continue
        g = size // 2
        child = done[level]
        slot = slots[level + 1]
        own_d, own_x, own_y = slot, slot + 2 * g, slot + 3 * g
        if child == 0:  # A·(x0 ⊕ x1), into the lower half of y
            d_pos[level + 1], x_pos[level + 1], y_pos[level + 1] = d + g, own_x, y
            _xor(work, own_x, x, x + g, g)
        elif child == 1:  # (B ⊕ A)·x1
            for i in range(2 * g):
                work[y + 2 * g + i] = work[y + i]
            d_pos[level + 1], x_pos[level + 1], y_pos[level + 1] = own_d, x + g, own_y
            _xor(work, own_d, d, d + g, 2 * g - 1)
        elif child == 2:  # (C ⊕ A)·x0
            _xor(work, y, y, own_y, 2 * g)
            d_pos[level + 1], x_pos[level + 1], y_pos[level + 1] = own_d, x, own_y
            _xor(work, own_d, d + 2 * g, d + g, 2 * g - 1)
        else:
            _xor(work, y + 2 * g, y + 2 * g, own_y, 2 * g)
            level -= 1
            continue
        done[level] = child + 1
        level += 1
        done[level] = 0


@njit(cache=True)
def _side(t: int, block: int) -> int:
    """The smallest b·2^L ≥ t with b a multiple of _UNIT_WORDS and at most ``block`` (itself a multiple)."""
    levels = 0
    while -(-t // (1 << levels)) > block:
        levels += 1
    b = -(-t // (1 << levels))
    return -(-b // _UNIT_WORDS) * _UNIT_WORDS << levels


@njit(cache=True, nogil=True)
def _toeplitz_words(d: np.ndarray, x: np.ndarray, rows: int, block: int, kernel: int) -> np.ndarray:
    """Z (2·``rows`` words, 128-bit rows as (low, high)) = T·x over GF(2)[x] for the ``rows`` × x.size word
    Toeplitz matrix T[a, c] = d[a − c + x.size − 1] (d: rows + x.size − 1 words). Tiled into squares of the
    shorter side, zero-padded to :func:`_side`, each done by :func:`_square` and XORed into Z."""
    cols = x.size
    z = np.zeros(2 * rows, np.uint64)
    work = np.empty(10 * _side(min(rows, cols), block), np.uint64)
    r0, c0, r_left, c_left = 0, 0, rows, cols
    while r_left > 0 and c_left > 0:
        if r_left <= c_left:  # a tile of all remaining rows and the next columns
            side = _side(r_left, block)
            height, width = r_left, min(side, c_left)
        else:  # a tile of all remaining columns and the next rows
            side = _side(c_left, block)
            height, width = min(side, r_left), c_left
        base = r0 - c0 + cols - side  # tile's d[k] = d[base + k]: T[r0 + a, c0 + c] = tile's d[a − c + side − 1]
        for k in range(2 * side - 1):
            j = base + k
            work[k] = d[j] if 0 <= j < d.size else np.uint64(0)  # outside d: seen by padding only
        work[2 * side: 2 * side + width] = x[c0: c0 + width]
        work[2 * side + width: 3 * side] = 0
        _square(work, side, block, kernel)
        for i in range(2 * height):
            z[2 * r0 + i] ^= work[3 * side + i]
        if r_left <= c_left:
            c0 += width
            c_left -= width
        else:
            r0 += height
            r_left -= height
    return z


def _bits(bits: np.ndarray, name: str) -> np.ndarray:
    bits = np.asarray(bits)
    if bits.ndim != 1 or bits.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of bits, got shape {bits.shape}")
    if bits.dtype != np.bool_ and not np.issubdtype(bits.dtype, np.integer):
        raise ValueError(f"{name} must hold integer bits, got dtype {bits.dtype}")
    if bits.dtype != np.bool_ and (bits.max() > 1 or (np.issubdtype(bits.dtype, np.signedinteger) and bits.min() < 0)):
        raise ValueError(f"{name} bits must be 0 or 1")
    return bits


def _words(bits: np.ndarray) -> np.ndarray:
    """Bits packed little-endian into native uint64 words: bit j at word j // 64, bit j % 64."""
    packed = np.packbits(bits, bitorder="little")
    buffer = np.zeros(-(-packed.size // 8) * 8, np.uint8)
    buffer[: packed.size] = packed
    return buffer.view("<u8").astype(np.uint64, copy=False)


@njit(cache=True)
def _shifted(words: np.ndarray, shift: int, first: int, count: int) -> np.ndarray:
    """Words ``first`` … ``first + count − 1`` of ``words`` moved up by ``shift`` < 64 bits (zero beyond)."""
    out = np.zeros(count, np.uint64)
    for t in range(count):
        u = first + t
        if 0 <= u < words.size:
            out[t] = words[u] << np.uint64(shift)
        if shift > 0 and 0 <= u - 1 < words.size:
            out[t] |= words[u - 1] >> np.uint64(WORD_BITS - shift)
    return out


def toeplitz_hash(key: np.ndarray, seed: np.ndarray, out_bits: int, *, workers: int = 1,
                  block_bits: int | None = None, kernel: int | None = None) -> np.ndarray:
    """``out_bits`` bits (uint8 0/1) T_seed·key mod 2 of an n-bit ``key`` and an (n + out_bits − 1)-bit ``seed``.

    ``workers``: threads, each multiplying a contiguous share of the key's words. ``block_bits``: a multiple
    of 512, the side of the largest square block done schoolbook (default: :data:`BLOCK_BITS` of the kernel).
    ``kernel``: the block kernel, one of :data:`KERNELS` (default: the first, the fastest). The result depends
    on none of them."""
    key = _bits(key, "key")
    n = key.size
    if not 1 <= out_bits <= n:
        raise ValueError(f"out_bits must be in 1..{n} (the key length), got {out_bits}")
    seed = _bits(seed, "seed")
    if seed.size != seed_length(n, out_bits):
        raise ValueError(f"seed must have key bits + out_bits − 1 = {seed_length(n, out_bits)} bits, "
                         f"got {seed.size}")
    kernel = KERNELS[0] if kernel is None else kernel
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS} on this CPU, got {kernel}")
    block_bits = BLOCK_BITS[kernel] if block_bits is None else block_bits
    unit = _UNIT_WORDS * WORD_BITS
    if block_bits < unit or block_bits % unit:
        raise ValueError(f"block_bits must be a positive multiple of {unit}, got {block_bits}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    x = _words(key)
    cols = x.size
    shift = -(n - 1) % WORD_BITS  # so that y_0, bit n − 1 of the product, starts word q of the shifted seed
    q = (n - 1 + shift) // WORD_BITS
    out_words = -(-out_bits // WORD_BITS)
    rows = out_words + 1  # Z_(q−1) … Z_(q+out_words−1)
    d = _shifted(_words(seed), shift, q - cols, rows + cols - 1)  # T[a, c] = word a − c + q − 1 of the seed
    block = block_bits // WORD_BITS
    shares = np.linspace(0, cols, min(workers, cols) + 1).round().astype(int)
    if shares.size == 2:
        z = _toeplitz_words(d, x, rows, block, kernel)
    else:  # columns c0 … c1 − 1 of T: the Toeplitz matrix of d[cols − c1:]; the products add up (XOR)
        with ThreadPoolExecutor(shares.size - 1) as pool:
            parts = pool.map(lambda c0, c1: _toeplitz_words(d[cols - c1: cols - c0 + rows - 1], x[c0: c1], rows,
                                                            block, kernel), shares[:-1], shares[1:])
            z = np.bitwise_xor.reduce(list(parts))
    y = z[2::2] ^ z[1:-1:2]  # output word w: low half of Z_(q+w), high half of Z_(q+w−1)
    return np.unpackbits(y.astype("<u8", copy=False).view(np.uint8), count=out_bits, bitorder="little")
