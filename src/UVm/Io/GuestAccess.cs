using System.Runtime.CompilerServices;
using UVm.Faults;
using UVm.Interop;

namespace UVm.Io;

/// <summary>
/// What a fallible reader or writer needs to touch guest memory: the space that resolves its
/// faults, that space's <see cref="ArenaGate"/>, and the calling thread's access state
/// (<see cref="ThreadAccess"/>; readers and writers are ref structs, so they never leave the
/// thread that created them). <see cref="Run"/> is the one protocol of every fallible access.
/// </summary>
[SkipLocalsInit] // the hot path's NativeFault is written by the primitive before it is read
internal readonly struct GuestAccess
{
    internal GuestAccess(IFaultResolver resolver, ArenaGate gate, ThreadAccess thread)
    {
        Resolver = resolver;
        Gate = gate;
        Thread = thread;
    }

    internal IFaultResolver Resolver { get; }
    internal ArenaGate Gate { get; }
    internal ThreadAccess Thread { get; }

    /// <summary>
    /// Does <paramref name="op"/> inside the space's gate, resolving its faults: true when it
    /// got all of it done; false when a fault stopped it, <paramref name="stopped"/> then saying
    /// after exactly how many bytes (copies and fills; 0 for a single value) and which fault.
    /// The common case (gate open, nothing faults) is this inlined path: enter, one primitive,
    /// the byte count, leave, and no store of a result. Anything else goes to
    /// <see cref="AfterFault"/>, out of line.
    /// </summary>
    /// <exception cref="Exception">Whatever the space's page-fault handler throws (the gate is left).</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal unsafe bool Run<TOp>(TOp op, out CopyResult stopped) where TOp : struct, IGuestOp
    {
        // Every access enters the gate, single loads too: even a load can have effects on
        // whatever the host put at a disposed space's addresses (a file or userfaultfd mapping
        // fills a page).
        using var scope = new GateScope(Thread, Gate);
        NativeFault f;
        if (Gate.IsClosed) return AfterFault(this, op, open: false, &f, out stopped);
        // SAFETY: the gate is open and we are inside it, so the op's guest bytes (inside its
        // reader's or writer's checked range) are in the space's arena until we leave; its
        // library bytes are pinned by the caller; the primitive recovers from any fault in
        // either and writes f when it returns false.
        if (op.Try(&f))
        {
            if (op.CountsBytes) Thread.CountBytes(op.Done); // per thread: no shared cache line on the copy path
            Unsafe.SkipInit(out stopped); // not read when the op is done
            return true;
        }
        return AfterFault(this, op, open: true, &f, out stopped);
    }

    /// <summary>
    /// The rest of <see cref="Run"/> after the op faulted, its fault in <c>*first</c>, or found
    /// the gate closed (<paramref name="open"/> false: nothing was tried): resolve and go on from
    /// the exact byte (<see cref="FaultResolution"/>), inside the caller's gate scope. Static,
    /// with everything by value, so that the caller's reader or writer stays in registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe bool AfterFault<TOp>(GuestAccess guest, TOp op, bool open, NativeFault* first, out CopyResult stopped)
        where TOp : struct, IGuestOp
    {
        if (!open)
        {
            stopped = guest.Closed(op.Start, op.Access);
            return false;
        }
        // SAFETY: `first` points to the caller's NativeFault, which the primitive wrote when it
        // failed (it is read only when the op was tried); the op is retried inside the caller's
        // gate scope, entered while the gate was open, as on the fast path.
        bool done = FaultResolution.Retry(ref op, guest.Resolver, *first, out PageFaultInfo fault);
        if (op.CountsBytes) guest.Thread.CountBytes(op.Done);
        stopped = done ? default : new CopyResult(op.Done, UVmError.PageFault, fault);
        return done;
    }

    /// <summary>
    /// The result of an access to a disposed space: nothing done, reported as a fault on an
    /// unmapped page at the guest address of <paramref name="at"/> (no host access was made).
    /// </summary>
    private unsafe CopyResult Closed(byte* at, PageFaultAccess access) =>
        new(0, UVmError.PageFault, new PageFaultInfo((ulong)((nint)at - Resolver.HostBase), access, PageFaultKind.NotPresent, NativeFaults.SIGSEGV));
}
