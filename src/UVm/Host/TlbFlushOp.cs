using UVm.Interop;
namespace UVm.Host;

/// <summary>The kind of host-MMU update a <see cref="TlbFlushOp"/> makes.</summary>
public enum TlbFlushOpKind
{
    /// <summary>Install frames: <c>mmap(MAP_SHARED|MAP_FIXED)</c> of the backing file (<c>MAP_PRIVATE</c> for host copies).</summary>
    Map,
    /// <summary>Return a range to the reserved state: <c>mmap(PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED|MAP_NORESERVE)</c>.</summary>
    Unmap,
    /// <summary>Change rights: <c>mprotect</c>.</summary>
    Protect,
}

/// <summary>
/// One pending update of the host mappings of a guest range: the host side of a page-table
/// change, the way a TLB invalidation is the hardware side of one. Built by cursors; applied,
/// coalesced with its neighbours, by <see cref="TlbFlusher.DispatchTlbFlush"/>.
/// </summary>
public readonly struct TlbFlushOp
{
    private TlbFlushOp(TlbFlushOpKind kind, ulong va, ulong length, int prot, int fd, ulong offset, bool populate = false, bool hostCopy = false)
    {
        Populate = populate;
        HostCopy = hostCopy;
        Kind = kind;
        Va = va;
        Length = length;
        Prot = prot;
        Fd = fd;
        Offset = offset;
    }

    /// <summary>What the operation does.</summary>
    public TlbFlushOpKind Kind { get; }

    /// <summary>First guest address affected.</summary>
    public ulong Va { get; }

    /// <summary>Bytes affected.</summary>
    public ulong Length { get; }

    /// <summary>Host protection (<c>PROT_*</c> bits) for <see cref="TlbFlushOpKind.Map"/> and <see cref="TlbFlushOpKind.Protect"/>.</summary>
    public int Prot { get; }

    /// <summary>Whether a map also populates the host page tables (<c>MAP_POPULATE</c>), so first accesses do not fault.</summary>
    public bool Populate { get; }

    /// <summary>Whether a map is private (<c>MAP_PRIVATE</c>): the host copies each page on its first write (a host copy).</summary>
    public bool HostCopy { get; }

    internal int Fd { get; }
    internal ulong Offset { get; }

    internal static TlbFlushOp ForMap(ulong va, ulong length, int fd, ulong offset, int prot, bool populate = false, bool hostCopy = false) =>
        new(TlbFlushOpKind.Map, va, length, prot, fd, offset, populate, hostCopy);

    internal static TlbFlushOp ForUnmap(ulong va, ulong length) =>
        new(TlbFlushOpKind.Unmap, va, length, Libc.PROT_NONE, -1, 0);

    internal static TlbFlushOp ForProtect(ulong va, ulong length, int prot) =>
        new(TlbFlushOpKind.Protect, va, length, prot, -1, 0);

    /// <summary>
    /// <paramref name="next"/> folded into this one when it continues it exactly (adjacent in
    /// guest address, same kind and rights, and for maps the same file at the adjacent offset).
    /// </summary>
    internal bool TryExtend(in TlbFlushOp next, out TlbFlushOp merged)
    {
        bool continues = next.Kind == Kind && next.Va == Va + Length && next.Prot == Prot && next.Populate == Populate && next.HostCopy == HostCopy
            && (Kind != TlbFlushOpKind.Map || (next.Fd == Fd && next.Offset == Offset + Length));
        merged = continues ? new TlbFlushOp(Kind, Va, Length + next.Length, Prot, Fd, Offset, Populate, HostCopy) : default;
        return continues;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Kind} [0x{Va:x}, +0x{Length:x}) prot={Prot}{(HostCopy ? " private" : "")}";
}
