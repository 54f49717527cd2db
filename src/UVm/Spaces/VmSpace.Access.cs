using System.Runtime.CompilerServices;
using UVm.Faults;
using UVm.Interop;
using UVm.Io;

namespace UVm.Spaces;

// One-call access to guest memory: the space's own accessors, bound to the space, not to a
// thread. They need no activation and work on any thread (after an await too): each call enters
// the space's arena gate for its duration, exactly as a reader's access does, and its faults
// are resolved by this space whatever is activated on the thread. Everything the guest controls
// (addresses, lengths, alignment) is answered with a result, never an exception:
//   - a byte outside [0, Size) is a fault of kind OutOfRange at that byte (the bytes before it
//     are transferred by copies; a single value is transferred whole or not at all);
//   - a disposed space is a fault of kind NotPresent at the first byte, nothing transferred and
//     the host range never touched (what a reader kept past Dispose reports);
//   - a misaligned atomic is UVmError.InvalidArgs with no fault (VmSpace.Atomics.cs).
// Exceptions stay for what only the embedder can get wrong: whatever its page-fault handler throws.

/// <summary>One-call access to guest memory, bound to the space (see also <see cref="Reader"/>).</summary>
public sealed partial class VmSpace
{
    /// <summary>
    /// Reads the <typeparamref name="T"/> at guest address <paramref name="va"/> (1, 2, 4 or 8
    /// bytes with a single access, other sizes by copy), resolving faults as a reader does.
    /// True when the whole value was read; false (and <paramref name="value"/> default) when a
    /// fault stayed unresolved, a byte of it lies outside the space, or the space was disposed.
    /// Needs no activation; works on any thread. <see cref="ReadVal{T}(ulong)"/> says which fault.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining), SkipLocalsInit] // the value local is written by the primitive before it is read
    public unsafe bool TryRead<T>(ulong va, out T value) where T : unmanaged
    {
        ulong end = va + (ulong)sizeof(T);
        T v;
        // SAFETY: [va, end) lies inside [0, Size), so inside the arena; the primitive recovers
        // from any fault there, inside the gate; `v` is a local written only on success.
        if (end >= va && end <= Size && Guest().Run(new LoadOp<T>(At(va), &v), out _))
        {
            value = v;
            return true;
        }
        if (end < va || end > Size) ValueOutside(va, PageFaultAccess.Read);
        value = default;
        return false;
    }

    /// <summary>
    /// Writes <paramref name="value"/> at guest address <paramref name="va"/> (1, 2, 4 or 8 bytes
    /// with a single access, other sizes by copy). True when the whole value was written; false
    /// when nothing was (a fault stayed unresolved, a byte lies outside the space, the space was
    /// disposed). Needs no activation; works on any thread.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining), SkipLocalsInit] // the value local is written by the primitive before it is read
    public unsafe bool TryWrite<T>(ulong va, T value) where T : unmanaged
    {
        ulong end = va + (ulong)sizeof(T);
        // SAFETY: [va, end) lies inside [0, Size), so inside the arena; the primitive recovers
        // from any fault there, inside the gate.
        if (end >= va && end <= Size && Guest().Run(new StoreOp<T>(At(va), value), out _)) return true;
        if (end < va || end > Size) ValueOutside(va, PageFaultAccess.Write);
        return false;
    }

    /// <summary>
    /// <see cref="TryRead{T}"/> with the details: the value, or <see cref="UVmError.PageFault"/>
    /// and the fault (at the first byte outside the space, kind
    /// <see cref="PageFaultKind.OutOfRange"/>, when the value does not lie inside it; at
    /// <paramref name="va"/>, kind <see cref="PageFaultKind.NotPresent"/>, when the space was disposed).
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    [SkipLocalsInit] // the value local is written by the primitive before it is read
    public unsafe IoResult<T> ReadVal<T>(ulong va) where T : unmanaged
    {
        ulong end = va + (ulong)sizeof(T);
        if (end < va || end > Size) return new IoResult<T>(default, UVmError.PageFault, ValueOutside(va, PageFaultAccess.Read));
        T v;
        // SAFETY: as in TryRead.
        return Guest().Run(new LoadOp<T>(At(va), &v), out CopyResult stopped)
            ? new IoResult<T>(v, null, null) : new IoResult<T>(default, stopped.Error, stopped.Fault);
    }

    /// <summary>
    /// <see cref="TryWrite{T}"/> with the details: the value written, or
    /// <see cref="UVmError.PageFault"/> and the fault, as for <see cref="ReadVal{T}(ulong)"/>.
    /// Nothing is written on failure.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    [SkipLocalsInit] // the value local is written by the primitive before it is read
    public unsafe IoResult<T> WriteVal<T>(ulong va, T value) where T : unmanaged
    {
        ulong end = va + (ulong)sizeof(T);
        if (end < va || end > Size) return new IoResult<T>(default, UVmError.PageFault, ValueOutside(va, PageFaultAccess.Write));
        // SAFETY: as in TryWrite.
        return Guest().Run(new StoreOp<T>(At(va), value), out CopyResult stopped)
            ? new IoResult<T>(value, null, null) : new IoResult<T>(default, stopped.Error, stopped.Fault);
    }

    /// <summary>
    /// Copies guest memory <c>[va, va + destination.Length)</c> into <paramref name="destination"/>,
    /// resolving faults, in ascending address order. The result counts the bytes copied exactly;
    /// when it stops early, the fault is at guest address <c>va + Bytes</c>: unresolved, or of kind
    /// <see cref="PageFaultKind.OutOfRange"/> at the first byte outside the space (the bytes before
    /// it are copied, even when <c>va + Length</c> overflows). Bytes of
    /// <paramref name="destination"/> past the count are unchanged. An empty span copies nothing
    /// and succeeds, whatever <paramref name="va"/>. A disposed space copies nothing: a fault of
    /// kind <see cref="PageFaultKind.NotPresent"/> at <paramref name="va"/>.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe CopyResult Read(ulong va, Span<byte> destination)
    {
        // SAFETY: the span is pinned for the copy and its Length bytes are writable.
        fixed (byte* dst = destination) return Transfer(Guest(), va, dst, (ulong)destination.Length, PageFaultAccess.Read);
    }

    /// <summary>
    /// Copies <paramref name="source"/> into guest memory <c>[va, va + source.Length)</c>, with
    /// the contract of <see cref="Read(ulong, Span{byte})"/>: an exact count, the fault at
    /// <c>va + Bytes</c>, nothing written past it.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe CopyResult Write(ulong va, ReadOnlySpan<byte> source)
    {
        // SAFETY: the span is pinned for the copy and its Length bytes are readable.
        fixed (byte* src = source) return Transfer(Guest(), va, src, (ulong)source.Length, PageFaultAccess.Write);
    }

    /// <summary>
    /// Gathers the guest ranges <paramref name="sources"/>, in order, into
    /// <paramref name="destination"/>, one after the other (a <c>readv</c> from guest memory),
    /// until the destination is full or the ranges end. The result counts the bytes gathered
    /// exactly; on the first fault it stops with that fault (unresolved, or
    /// <see cref="PageFaultKind.OutOfRange"/> at the first byte of a range outside the space:
    /// a range that passes the end, or whose end overflows). Empty ranges, and ranges or bytes
    /// past what fits in the destination, are never touched nor checked.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe CopyResult Gather(ReadOnlySpan<GuestRange> sources, Span<byte> destination)
    {
        // SAFETY: the span is pinned while its first `room` bytes are written, range by range.
        fixed (byte* dst = destination) return Vector(sources, dst, (ulong)destination.Length, PageFaultAccess.Read);
    }

    /// <summary>
    /// Scatters <paramref name="source"/> over the guest ranges <paramref name="destinations"/>,
    /// in order (a <c>writev</c> into guest memory), until the source is used up or the ranges
    /// end, with the contract of <see cref="Gather"/>: an exact count, the first fault, nothing
    /// touched past it.
    /// </summary>
    /// <exception cref="Exception">Whatever the registered page-fault handler throws.</exception>
    public unsafe CopyResult Scatter(ReadOnlySpan<byte> source, ReadOnlySpan<GuestRange> destinations)
    {
        // SAFETY: the span is pinned while its bytes are read, range by range.
        fixed (byte* src = source) return Vector(destinations, src, (ulong)source.Length, PageFaultAccess.Write);
    }

    /// <summary>What one-call accesses of the calling thread run with; installs UVm's handler the first time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private GuestAccess Guest()
    {
        NativeFaults.EnsureInstalled();
        return new GuestAccess(this, _gate, ThreadAccess.Current);
    }

    /// <summary>The host address of guest address <paramref name="va"/> (the caller proves it inside the space).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe byte* At(ulong va) => (byte*)(HostBase + (nint)va);

    /// <summary>
    /// The fault of a single value at <paramref name="va"/> that does not lie inside the space: at
    /// its first byte outside (<paramref name="va"/> itself, or <see cref="Size"/>). Counted as
    /// unresolved, like the out-of-range faults the hardware raises.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageFaultInfo ValueOutside(ulong va, PageFaultAccess access) => Outside(va < Size ? Size : va, access);

    private PageFaultInfo Outside(ulong va, PageFaultAccess access)
    {
        Interlocked.Increment(ref _unresolvedFaults);
        return new PageFaultInfo(va, access, PageFaultKind.OutOfRange, NativeFaults.SIGSEGV);
    }

    /// <summary>
    /// Copies <paramref name="len"/> bytes between guest <c>[va, va + len)</c> and library memory
    /// at <paramref name="lib"/> (the source of a write, the destination of a read): the part
    /// inside the space, then, if the range goes on past it, an out-of-range fault at its first
    /// byte outside.
    /// </summary>
    /// <remarks>SAFETY: the caller proves <paramref name="len"/> bytes at <paramref name="lib"/> pinned and valid.</remarks>
    private unsafe CopyResult Transfer(in GuestAccess guest, ulong va, byte* lib, ulong len, PageFaultAccess access)
    {
        if (len == 0) return new CopyResult(0, null, null);
        ulong inside = va >= Size ? 0 : Math.Min(len, Size - va);
        if (inside != 0)
        {
            // SAFETY: [va, va + inside) lies inside [0, Size), so inside the arena; the library
            // side is the caller's to prove; the primitive recovers from any fault in either.
            CopyResult r = access == PageFaultAccess.Read
                ? FallibleIo.Copy(guest, lib, At(va), inside, access)
                : FallibleIo.Copy(guest, At(va), lib, inside, access);
            if (!r.IsOk || inside == len) return r;
        }
        return new CopyResult(inside, UVmError.PageFault, Outside(va + inside, access));
    }

    /// <summary>
    /// Gather (a read) or scatter (a write) between <paramref name="ranges"/> and
    /// <paramref name="room"/> bytes of library memory at <paramref name="lib"/>.
    /// </summary>
    /// <remarks>SAFETY: the caller proves <paramref name="room"/> bytes at <paramref name="lib"/> pinned and valid.</remarks>
    private unsafe CopyResult Vector(ReadOnlySpan<GuestRange> ranges, byte* lib, ulong room, PageFaultAccess access)
    {
        GuestAccess guest = Guest();
        ulong done = 0;
        foreach (GuestRange range in ranges)
        {
            if (done == room) break;
            // SAFETY: `want` bytes from lib + done stay inside the caller's `room`.
            ulong want = Math.Min(range.Length, room - done);
            CopyResult r = Transfer(guest, range.Va, lib + done, want, access);
            done += r.Bytes;
            if (!r.IsOk) return r with { Bytes = done };
        }
        return new CopyResult(done, null, null);
    }
}
