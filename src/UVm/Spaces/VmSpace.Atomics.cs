using UVm.Faults;
using UVm.Io;

namespace UVm.Spaces;

/// <summary>
/// One-call atomic access to guest memory, bound to the space like <see cref="TryRead{T}"/>:
/// load, store, swap and compare-exchange of naturally aligned 32- and 64-bit values, each one
/// sequentially consistent instruction (the primitives of gVisor's <c>LoadUint32</c>,
/// <c>StoreUint32</c>, <c>SwapUint32</c>, <c>CompareAndSwapUint32</c>, ...).
/// </summary>
/// <remarks>
/// The guest chooses the address, so every way it can be wrong is a result: a misaligned address
/// is <see cref="UVmError.InvalidArgs"/> with no fault and nothing touched (checked first, as a
/// futex word's alignment is); an address outside the space is <see cref="UVmError.PageFault"/>
/// with a fault of kind <see cref="PageFaultKind.OutOfRange"/> at it; a disposed space is a fault
/// of kind <see cref="PageFaultKind.NotPresent"/>, the host range untouched. A store, swap or
/// compare-exchange is a write even when it changes nothing, so it faults on a read-only page.
/// The value of a failed operation is 0. (A writer's atomics, in <see cref="FallibleIo"/>, throw
/// <see cref="ArgumentException"/> for a misaligned cursor instead: there the embedder placed the
/// cursor.)
/// </remarks>
public sealed partial class VmSpace
{
    /// <summary>Atomically loads the aligned 32-bit value at <paramref name="va"/>.</summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe IoResult<uint> AtomicLoad32(ulong va)
    {
        if (!CanAtomic(va, sizeof(uint), PageFaultAccess.Read, out IoResult<uint> refused)) return refused;
        uint v;
        // SAFETY: CanAtomic proved the 4 bytes aligned and inside the space (so inside the arena);
        // an aligned 4-byte load is one atomic access on x86-64; `v` is written only on success.
        return Guest().Run(new LoadOp<uint>(At(va), &v), out CopyResult s) ? new(v, null, null) : new(0, s.Error, s.Fault);
    }

    /// <summary>Atomically loads the aligned 64-bit value at <paramref name="va"/>.</summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe IoResult<ulong> AtomicLoad64(ulong va)
    {
        if (!CanAtomic(va, sizeof(ulong), PageFaultAccess.Read, out IoResult<ulong> refused)) return refused;
        ulong v;
        // SAFETY: as in AtomicLoad32, for 8 bytes.
        return Guest().Run(new LoadOp<ulong>(At(va), &v), out CopyResult s) ? new(v, null, null) : new(0, s.Error, s.Fault);
    }

    /// <summary>
    /// Atomically stores <paramref name="value"/> at the aligned 32-bit slot at <paramref name="va"/>,
    /// sequentially consistent (an exchange whose old value is dropped); returns the value stored.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public IoResult<uint> AtomicStore(ulong va, uint value)
    {
        IoResult<uint> r = AtomicSwap(va, value);
        return r.IsOk ? r with { Value = value } : r;
    }

    /// <summary>The 64-bit form of <see cref="AtomicStore(ulong, uint)"/>.</summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public IoResult<ulong> AtomicStore(ulong va, ulong value)
    {
        IoResult<ulong> r = AtomicSwap(va, value);
        return r.IsOk ? r with { Value = value } : r;
    }

    /// <summary>
    /// Atomically replaces the aligned 32-bit value at <paramref name="va"/> with
    /// <paramref name="value"/> and returns the value replaced.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe IoResult<uint> AtomicSwap(ulong va, uint value)
    {
        if (!CanAtomic(va, sizeof(uint), PageFaultAccess.Write, out IoResult<uint> refused)) return refused;
        // SAFETY: CanAtomic proved the 4 bytes aligned and inside the space, so inside the arena.
        return FallibleIo.Swap32(Guest(), At(va), value);
    }

    /// <summary>The 64-bit form of <see cref="AtomicSwap(ulong, uint)"/>.</summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe IoResult<ulong> AtomicSwap(ulong va, ulong value)
    {
        if (!CanAtomic(va, sizeof(ulong), PageFaultAccess.Write, out IoResult<ulong> refused)) return refused;
        // SAFETY: CanAtomic proved the 8 bytes aligned and inside the space, so inside the arena.
        return FallibleIo.Swap64(Guest(), At(va), value);
    }

    /// <summary>
    /// Atomically replaces the aligned 32-bit value at <paramref name="va"/> with
    /// <paramref name="desired"/> if it equals <paramref name="expected"/>. Returns the value seen
    /// before (equal to <paramref name="expected"/> exactly when the swap happened).
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe IoResult<uint> AtomicCompareExchange(ulong va, uint expected, uint desired)
    {
        if (!CanAtomic(va, sizeof(uint), PageFaultAccess.Write, out IoResult<uint> refused)) return refused;
        // SAFETY: CanAtomic proved the 4 bytes aligned and inside the space, so inside the arena.
        return FallibleIo.Cas32(Guest(), At(va), expected, desired);
    }

    /// <summary>The 64-bit form of <see cref="AtomicCompareExchange(ulong, uint, uint)"/>.</summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe IoResult<ulong> AtomicCompareExchange(ulong va, ulong expected, ulong desired)
    {
        if (!CanAtomic(va, sizeof(ulong), PageFaultAccess.Write, out IoResult<ulong> refused)) return refused;
        // SAFETY: CanAtomic proved the 8 bytes aligned and inside the space, so inside the arena.
        return FallibleIo.Cas64(Guest(), At(va), expected, desired);
    }

    /// <summary>
    /// Whether an atomic of <paramref name="size"/> bytes may be made at <paramref name="va"/>:
    /// aligned (else <see cref="UVmError.InvalidArgs"/>) and inside the space (else an
    /// out-of-range fault at <paramref name="va"/>; an aligned value that starts inside ends
    /// inside, the size being a multiple of 2 MiB). Otherwise <paramref name="refused"/> says why.
    /// </summary>
    private bool CanAtomic<T>(ulong va, int size, PageFaultAccess access, out IoResult<T> refused)
    {
        if ((va & (ulong)(size - 1)) != 0) refused = new IoResult<T>(default!, UVmError.InvalidArgs, null);
        else if (va >= Size) refused = new IoResult<T>(default!, UVmError.PageFault, Outside(va, access));
        else
        {
            refused = default;
            return true;
        }
        return false;
    }
}
