using UVm.Frames;
using UVm.Spaces;

namespace UVm.Areas;

/// <summary>Where an area's pages come from.</summary>
public abstract record AreaBackend
{
    private protected AreaBackend() { }

    /// <summary>
    /// Private memory from the frame pool. With <paramref name="Populate"/> every page gets a
    /// zeroed frame when the area is mapped; otherwise pages are allocated on first access
    /// (demand-zero, with fault-around). After a fork the frames are shared copy-on-write.
    /// </summary>
    /// <param name="Populate">Allocate all frames at map time.</param>
    public sealed record Alloc(bool Populate) : AreaBackend;

    /// <summary>
    /// Shared memory at a fixed offset into a segment of frames: page <c>i</c> of the area maps
    /// frame <c>Offset / PageSize + i</c>. Mapped at once; never faults for data. Writes are
    /// shared, also across a fork. The caller keeps owning the segment handle.
    /// </summary>
    /// <param name="Segment">The frames.</param>
    /// <param name="Offset">Byte offset into the segment (page aligned).</param>
    public sealed record LinearFrames(USegment Segment, ulong Offset) : AreaBackend;

    /// <summary>Shared I/O memory at a fixed offset into <paramref name="IoMem"/>, mapped at once.</summary>
    /// <param name="IoMem">The region.</param>
    /// <param name="Offset">Byte offset into the region (page aligned).</param>
    public sealed record LinearIoMem(IoMem IoMem, ulong Offset) : AreaBackend;
}

/// <summary>A range of guest addresses with its rights and backend.</summary>
/// <param name="Range">The area, <c>[Start, End)</c>.</param>
/// <param name="Flags">The rights any page of the area may have.</param>
/// <param name="Backend">Where the pages come from.</param>
public sealed record VmArea(VaddrRange Range, PageFlags Flags, AreaBackend Backend)
{
    /// <summary>The part <c>[start, end)</c> of this area, its linear offset moved accordingly.</summary>
    internal VmArea Slice(ulong start, ulong end)
    {
        ulong shift = start - Range.Start;
        AreaBackend backend = Backend switch
        {
            AreaBackend.LinearFrames f => f with { Offset = f.Offset + shift },
            AreaBackend.LinearIoMem io => io with { Offset = io.Offset + shift },
            _ => Backend,
        };
        return new VmArea(new VaddrRange(start, end), Flags, backend);
    }
}

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
