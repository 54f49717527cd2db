namespace UVm;

/// <summary>Access rights and status bits of a mapped page.</summary>
[Flags]
public enum PageFlags : byte
{
    /// <summary>No access.</summary>
    None = 0,
    /// <summary>Readable.</summary>
    R = 1,
    /// <summary>Writable. On x86-64 the host allows reads wherever it allows writes.</summary>
    W = 2,
    /// <summary>Executable.</summary>
    X = 4,
    /// <summary>Readable and writable.</summary>
    RW = R | W,
    /// <summary>Readable and executable.</summary>
    RX = R | X,
    /// <summary>Readable, writable and executable.</summary>
    RWX = R | W | X,
    /// <summary>The page has been accessed (kept in the entry; UVm does not set it by itself).</summary>
    Accessed = 8,
    /// <summary>The page has been written (kept in the entry; UVm does not set it by itself).</summary>
    Dirty = 16,
    /// <summary>A bit free for the user of the page table.</summary>
    Avail1 = 64,
    /// <summary>A second bit free for the user of the page table.</summary>
    Avail2 = 128,
}

/// <summary>
/// Cache policy of a mapping. Recorded in the page table and reported by queries; the host
/// mirror cannot change caching of ordinary memory, so it has no effect on the host.
/// </summary>
public enum CachePolicy : byte
{
    /// <summary>Write-back, the normal policy.</summary>
    Writeback = 0,
    /// <summary>Write-through.</summary>
    Writethrough,
    /// <summary>Uncacheable.</summary>
    Uncacheable,
    /// <summary>Write-combining.</summary>
    WriteCombining,
    /// <summary>Write-protected.</summary>
    WriteProtected,
}

/// <summary>Bits of an entry that only the library (the "kernel" side) may set.</summary>
[Flags]
public enum PrivilegedPageFlags : byte
{
    /// <summary>None.</summary>
    None = 0,
    /// <summary>Accessible from user (guest) mode. Set on every guest mapping.</summary>
    User = 1,
    /// <summary>Global mapping (kept in the entry; meaningless on the host).</summary>
    Global = 2,
    /// <summary>Marks an untracked mapping (I/O memory, not reference counted). Set and cleared by UVm only.</summary>
    Avail1 = 4,
}

/// <summary>The properties of a mapped page: rights, cache policy, privileged bits.</summary>
/// <param name="Flags">Access rights and status bits.</param>
/// <param name="Cache">Cache policy.</param>
/// <param name="PrivFlags">Privileged bits.</param>
public readonly record struct PageProperty(PageFlags Flags, CachePolicy Cache, PrivilegedPageFlags PrivFlags)
{
    /// <summary>A guest (user) mapping with <paramref name="flags"/> and <paramref name="cache"/>.</summary>
    public static PageProperty New(PageFlags flags, CachePolicy cache = CachePolicy.Writeback) =>
        new(flags, cache, PrivilegedPageFlags.User);

    /// <inheritdoc/>
    public override string ToString() => $"{Flags}/{Cache}/{PrivFlags}";
}
