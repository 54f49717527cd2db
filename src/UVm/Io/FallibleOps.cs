using System.Runtime.CompilerServices;
using UVm.Faults;
using UVm.Interop;

namespace UVm.Io;

/// <summary>
/// A fallible access as <see cref="GuestAccess.Run"/> does it: an <see cref="IFallibleOp"/>
/// that also says where its guest side starts, which access that side sees, and whether its
/// bytes count in UVm's metrics.
/// </summary>
/// <remarks>
/// SAFETY, for every op: its constructor's caller proves the guest bytes lie inside a fallible
/// reader's or writer's checked range (or a range the space's one-call accessors checked) and the library bytes are pinned and valid for the whole
/// access; <see cref="IFallibleOp.Try"/> is called only inside the space's open gate.
/// </remarks>
internal unsafe interface IGuestOp : IFallibleOp
{
    /// <summary>The host address of the guest side's first byte: where an access to a disposed space is reported.</summary>
    byte* Start { get; }

    /// <summary>The access the guest side sees.</summary>
    PageFaultAccess Access { get; }

    /// <summary>Whether the bytes done count in UVm's metrics (copies and fills do, single values do not).</summary>
    bool CountsBytes { get; }
}

/// <summary>
/// Copies <c>want</c> bytes from <c>src</c> to <c>dst</c>, one side guest memory (the source of
/// a read, the destination of a write), the other pinned library memory; resumed from the exact
/// byte where it stopped.
/// </summary>
internal unsafe struct CopyOp(byte* dst, byte* src, ulong want, PageFaultAccess access) : IGuestOp
{
    private ulong _done;

    public readonly ulong Done => _done;
    public readonly byte* Start => access == PageFaultAccess.Read ? src : dst;
    public readonly PageFaultAccess Access => access;
    public readonly bool CountsBytes => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault)
    {
        // SAFETY: [done, want) of both ranges is inside what the op was made over (see IGuestOp);
        // the primitive recovers from any fault in either side.
        ulong left = NativeFaults.Copy(dst + _done, src + _done, want - _done, fault);
        if (left == 0)
        {
            _done = want; // spelled out: on the fast path the count is `want`, already in a register
            return true;
        }
        _done = want - left;
        return false;
    }
}

/// <summary>Zeroes <c>want</c> bytes of guest memory at <c>dst</c>; resumed from the exact byte where it stopped.</summary>
internal unsafe struct FillZeroOp(byte* dst, ulong want) : IGuestOp
{
    private ulong _done;

    public readonly ulong Done => _done;
    public readonly byte* Start => dst;
    public readonly PageFaultAccess Access => PageFaultAccess.Write;
    public readonly bool CountsBytes => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault)
    {
        // SAFETY: [done, want) is inside the writer's checked range (see IGuestOp); the primitive
        // recovers from any fault there.
        ulong left = NativeFaults.FillZero(dst + _done, want - _done, fault);
        if (left == 0)
        {
            _done = want; // spelled out: on the fast path the count is `want`, already in a register
            return true;
        }
        _done = want - left;
        return false;
    }
}

/// <summary>Loads one <typeparamref name="T"/> at <c>at</c> into <c>*value</c> (1, 2, 4 or 8 bytes with a single access; other sizes by copy).</summary>
internal readonly unsafe struct LoadOp<T>(byte* at, T* value) : IGuestOp where T : unmanaged
{
    public ulong Done => 0;
    public byte* Start => at;
    public PageFaultAccess Access => PageFaultAccess.Read;
    public bool CountsBytes => false;

    // SAFETY: sizeof(T) guest bytes at `at` are inside the reader's checked range (see IGuestOp);
    // `value` points to a local of the caller's of exactly sizeof(T) bytes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault) => NativeFaults.Load(at, value, fault) == 0;
}

/// <summary>Stores one <typeparamref name="T"/> at <c>at</c> (1, 2, 4 or 8 bytes with a single access; other sizes by copy).</summary>
internal readonly unsafe struct StoreOp<T>(byte* at, T value) : IGuestOp where T : unmanaged
{
    public ulong Done => 0;
    public byte* Start => at;
    public PageFaultAccess Access => PageFaultAccess.Write;
    public bool CountsBytes => false;

    // SAFETY: sizeof(T) guest bytes at `at` are inside the writer's checked range (see IGuestOp).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault) => NativeFaults.Store(at, value, fault) == 0;
}

/// <summary>
/// Atomically replaces the aligned 32-bit value at <c>at</c> with <c>desired</c> if it equals
/// <c>expected</c>; <c>*observed</c> gets the value seen before. Counts as a write either way.
/// </summary>
internal readonly unsafe struct Cas32Op(byte* at, uint expected, uint desired, uint* observed) : IGuestOp
{
    public ulong Done => 0;
    public byte* Start => at;
    public PageFaultAccess Access => PageFaultAccess.Write;
    public bool CountsBytes => false;

    // SAFETY: 4 aligned guest bytes at `at` are inside the writer's checked range (see IGuestOp);
    // `observed` points to a local of the caller's.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault) => NativeFaults.Cas32(at, expected, desired, observed, fault) == 0;
}

/// <summary>The 64-bit form of <see cref="Cas32Op"/>.</summary>
internal readonly unsafe struct Cas64Op(byte* at, ulong expected, ulong desired, ulong* observed) : IGuestOp
{
    public ulong Done => 0;
    public byte* Start => at;
    public PageFaultAccess Access => PageFaultAccess.Write;
    public bool CountsBytes => false;

    // SAFETY: 8 aligned guest bytes at `at` are inside the writer's checked range (see IGuestOp);
    // `observed` points to a local of the caller's.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault) => NativeFaults.Cas64(at, expected, desired, observed, fault) == 0;
}

/// <summary>
/// Atomically replaces the aligned 32-bit value at <c>at</c> with <c>value</c> (<c>xchg</c>,
/// sequentially consistent); <c>*old</c> gets the value replaced. An atomic store is this op
/// with the old value dropped.
/// </summary>
internal readonly unsafe struct Swap32Op(byte* at, uint value, uint* old) : IGuestOp
{
    public ulong Done => 0;
    public byte* Start => at;
    public PageFaultAccess Access => PageFaultAccess.Write;
    public bool CountsBytes => false;

    // SAFETY: 4 aligned guest bytes at `at` are inside a checked range (see IGuestOp); `old`
    // points to a local of the caller's.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault) => NativeFaults.Swap32(at, value, old, fault) == 0;
}

/// <summary>The 64-bit form of <see cref="Swap32Op"/>.</summary>
internal readonly unsafe struct Swap64Op(byte* at, ulong value, ulong* old) : IGuestOp
{
    public ulong Done => 0;
    public byte* Start => at;
    public PageFaultAccess Access => PageFaultAccess.Write;
    public bool CountsBytes => false;

    // SAFETY: 8 aligned guest bytes at `at` are inside a checked range (see IGuestOp); `old`
    // points to a local of the caller's.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Try(NativeFault* fault) => NativeFaults.Swap64(at, value, old, fault) == 0;
}
