using UVm.Faults;
using UVm.Spaces;

namespace UVm.Areas;

/// <summary>Where an area's pages come from.</summary>
/// <remarks>
/// Each backend is one nested record in a file of its own (<c>AreaBackend.*.cs</c>) with its own
/// behaviour: what it accepts, what it maps when its area is mapped, how a part of it is cut out,
/// whether its pages are private, and how a fault on one of its pages that is not present is
/// resolved. <see cref="AddressSpace"/> asks the backend and never looks at its type, so a new
/// backend is one new file.
/// </remarks>
public abstract partial record AreaBackend
{
    /// <summary>The name of <see cref="AddressSpace.Map"/>'s parameter, for the argument exceptions of <see cref="Validate"/>.</summary>
    internal const string ParamName = "backend";

    private protected AreaBackend() { }

    /// <summary>
    /// Checks that this backend can back an area of <paramref name="length"/> bytes of
    /// <paramref name="space"/>, before anything changes; throws what <see cref="AddressSpace.Map"/>
    /// documents for a bad backend. Default: anything goes.
    /// </summary>
    internal virtual void Validate(VmSpace space, ulong length) { }

    /// <summary>
    /// Maps the pages of <paramref name="area"/> that exist as soon as it does (every page of a
    /// linear or populated area, none of a lazy one). On failure it may leave part of the range
    /// mapped: the caller unmaps the whole range.
    /// </summary>
    internal abstract void MapAtOnce(AddressSpace owner, VmArea area);

    /// <summary>This backend for the part of an area that starts <paramref name="shift"/> bytes into it. Default: the same.</summary>
    internal virtual AreaBackend Shifted(ulong shift) => this;

    /// <summary>
    /// Whether the area's frames of the pool are private to the space: shared with a forked
    /// space copy-on-write, so a mapped page gets W back only through <see cref="CopyOnWrite"/>.
    /// Default: no (shared memory, whose writes every space sees).
    /// </summary>
    internal virtual bool HasPrivatePages => false;

    /// <summary>
    /// The kind an unresolved fault in the area is reported with instead of the page table's
    /// <see cref="PageFaultKind.NotPresent"/> (<see cref="PageFaultKind.Guard"/> for a guard
    /// area); null, the default, for the page table's. A backend with a kind is never resolved.
    /// </summary>
    internal virtual PageFaultKind? UnresolvedKind => null;

    /// <summary>How the area's pages come to be, in a few words, for maps-style dumps (addresses as 12 hex digits).</summary>
    internal abstract string Describe();

    /// <summary>
    /// Resolves a fault on <paramref name="page"/> of <paramref name="area"/>, where nothing is
    /// mapped; true when it is resolved. Called under the address space's area lock (read), with
    /// no cursor held; the area allows the access.
    /// </summary>
    internal abstract bool ResolveNotPresent(AddressSpace owner, VmArea area, ulong page);

    /// <summary>Maps page <paramref name="page"/> of a linear <paramref name="area"/> again, as mapping the area mapped it.</summary>
    internal static bool RemapPage(AddressSpace owner, VmArea area, ulong page)
    {
        VmArea slice = area.Slice(page, page + Paging.PageSize);
        slice.Backend.MapAtOnce(owner, slice);
        return true;
    }
}
