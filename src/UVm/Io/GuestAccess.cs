using UVm.Faults;
using UVm.Interop;

namespace UVm.Io;

/// <summary>
/// What a fallible reader or writer needs to touch guest memory: the space that resolves its
/// faults, that space's <see cref="ArenaGate"/>, and the calling thread's access state
/// (<see cref="ThreadAccess"/>; readers and writers are ref structs, so they never leave the
/// thread that created them).
/// </summary>
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
    /// The result of an access to a disposed space: nothing done, reported as a fault on an
    /// unmapped page at the guest address of <paramref name="at"/> (no host access was made).
    /// </summary>
    internal unsafe CopyResult Closed(byte* at, PageFaultAccess access) =>
        new(0, UVmError.PageFault, new PageFaultInfo((ulong)((nint)at - Resolver.HostBase), access, PageFaultKind.NotPresent, NativeFaults.SIGSEGV));
}
