using UVm.Faults;

namespace UVm.Areas;

public abstract partial record AreaBackend
{
    /// <summary>
    /// A reserved range that is never mapped (a stack guard, a heap red zone): the area keeps
    /// other mappings out of it, and every access to it fails with <see cref="UVmError.PageFault"/>
    /// reported as <see cref="PageFaultKind.Guard"/> at the exact address, whatever the area's
    /// rights say (they mean nothing here). <see cref="AddressSpace.Prefault"/> of it fails;
    /// <see cref="AreaStats.GuardFaults"/> counts the faults.
    /// </summary>
    /// <remarks>Not to be confused with <c>VmSpaceOptions.HostGuardSize</c>, host address range
    /// after the arena that is not guest address space at all.</remarks>
    public sealed record Guard : AreaBackend
    {
        internal override PageFaultKind? UnresolvedKind => PageFaultKind.Guard;

        internal override void MapAtOnce(AddressSpace owner, VmArea area) { } // nothing, ever

        internal override bool ResolveNotPresent(AddressSpace owner, VmArea area, ulong page) => false;

        internal override string Describe() => "guard";
    }
}
