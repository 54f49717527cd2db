namespace UVm.Frames;

/// <summary>How frames are allocated from a <see cref="FramePool"/>.</summary>
public sealed record FrameAllocOptions
{
    /// <summary>The default options: zeroed frames.</summary>
    public static FrameAllocOptions Default { get; } = new();

    /// <summary>
    /// Whether the frames must read as zero. True by default. UVm hands out only frames whose
    /// host pages were hole-punched (or never touched), so zeroed frames cost nothing extra;
    /// the option is kept so a caller can state that it does not rely on it.
    /// </summary>
    public bool Zeroed { get; init; } = true;
}
