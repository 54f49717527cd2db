namespace UVm.Areas;

/// <summary>Options of <see cref="AddressSpace.Map"/>: where, how aligned, with which rights.</summary>
public sealed record VmMapOptions
{
    /// <summary>The fixed address of the mapping, or null to take the first free range.</summary>
    public ulong? Addr { get; init; }

    /// <summary>Alignment of the chosen address: a power of two, at least the page size. Default: the page size.</summary>
    public ulong Align { get; init; } = Paging.PageSize;

    /// <summary>Rights of the mapping. Default: read-only.</summary>
    public PageFlags Flags { get; init; } = PageFlags.R;

    /// <summary>Whether a fixed mapping may replace existing ones. Requires <see cref="Addr"/>.</summary>
    public bool CanOverwrite { get; init; }
}
