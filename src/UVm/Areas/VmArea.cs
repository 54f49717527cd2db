namespace UVm.Areas;

/// <summary>A range of guest addresses with its rights and backend.</summary>
/// <param name="Range">The area, <c>[Start, End)</c>.</param>
/// <param name="Flags">The rights any page of the area may have.</param>
/// <param name="Backend">Where the pages come from.</param>
public sealed record VmArea(VaddrRange Range, PageFlags Flags, AreaBackend Backend)
{
    /// <summary>The part <c>[start, end)</c> of this area, its backend shifted accordingly (a linear offset moves).</summary>
    internal VmArea Slice(ulong start, ulong end) => new(new VaddrRange(start, end), Flags, Backend.Shifted(start - Range.Start));
}
