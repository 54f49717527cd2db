using UVm.Spaces;

namespace UVm.Areas;

public abstract partial record AreaBackend
{
    /// <summary>
    /// Private memory from the frame pool. With <paramref name="Populate"/> every page gets a
    /// zeroed frame when the area is mapped; otherwise pages are allocated on first access
    /// (demand-zero, with fault-around). After a fork the frames are shared copy-on-write.
    /// </summary>
    /// <param name="Populate">Allocate all frames at map time.</param>
    public sealed record Alloc(bool Populate) : AreaBackend
    {
        internal override bool HasPrivatePages => true;

        internal override void MapAtOnce(AddressSpace owner, VmArea area)
        {
            if (!Populate) return; // lazy: pages come with their first fault
            using CursorMut c = owner.Space.CursorMut(area.Range);
            for (ulong va = area.Range.Start; va < area.Range.End; va += Paging.PageSize)
                owner.Chunks.MapNewFrame(c, va, owner.PropFor(area, va), populate: false);
        }

        internal override bool ResolveNotPresent(AddressSpace owner, VmArea area, ulong page) => DemandZero.Resolve(owner, area, page);

        internal override string Describe() => Populate ? "alloc (populated)" : "alloc (demand-zero)";
    }
}
