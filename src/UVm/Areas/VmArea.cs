namespace UVm.Areas;

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
