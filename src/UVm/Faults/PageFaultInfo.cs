using UVm.Interop;

namespace UVm.Faults;

/// <summary>The access that faulted.</summary>
public enum PageFaultAccess
{
    /// <summary>A read.</summary>
    Read = 0,
    /// <summary>A write.</summary>
    Write = 1,
    /// <summary>An instruction fetch.</summary>
    Execute = 2,
}

/// <summary>Why the access faulted, according to the page table (and, for <see cref="Guard"/>, the layer that manages the space).</summary>
public enum PageFaultKind
{
    /// <summary>Nothing is mapped at the address.</summary>
    NotPresent,
    /// <summary>A page is mapped but its rights forbid the access.</summary>
    Protection,
    /// <summary>The backing memory is gone (SIGBUS: e.g. the file behind I/O memory was truncated).</summary>
    BusError,
    /// <summary>The address is not in the guest's user space (or the fault hit library memory).</summary>
    OutOfRange,
    /// <summary>
    /// Nothing is mapped at the address and never will be: it lies in a guard area (a reserved
    /// range such as a stack guard or a heap red zone, <c>AreaBackend.Guard</c> of an
    /// <c>AddressSpace</c>). Reported instead of <see cref="NotPresent"/> for such addresses.
    /// </summary>
    Guard,
}

/// <summary>A page fault as UVm hands it to a page-fault handler, and reports it when unresolved.</summary>
/// <param name="Address">Guest virtual address of the first byte that faulted; when <see cref="Kind"/> is
/// <see cref="PageFaultKind.OutOfRange"/> because the fault hit memory outside the arena (library memory), the host address.</param>
/// <param name="Access">The access that faulted.</param>
/// <param name="Kind">Why, according to the page table at the time of the fault.</param>
/// <param name="Signal">The host signal: 11 (SIGSEGV) or 7 (SIGBUS).</param>
public readonly record struct PageFaultInfo(ulong Address, PageFaultAccess Access, PageFaultKind Kind, int Signal)
{
    /// <summary>Whether the host reported a bus error (SIGBUS) rather than a segmentation fault.</summary>
    public bool IsBusError => Signal == NativeFaults.SIGBUS;
}


/// <summary>The one place that says which right an access needs.</summary>
internal static class FaultRights
{
    /// <summary>The right <paramref name="access"/> needs: W for a write, X for an instruction fetch, R for a read.</summary>
    internal static PageFlags Needed(PageFaultAccess access) => access switch
    {
        PageFaultAccess.Write => PageFlags.W,
        PageFaultAccess.Execute => PageFlags.X,
        _ => PageFlags.R,
    };
}
