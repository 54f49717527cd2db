using System.Runtime.CompilerServices;
using UVm.Interop;

namespace UVm.PageTable;

/// <summary>
/// Encoding of a 64-bit page-table entry, x86-64 shaped:
/// bit 0 present, 1 writable, 2 user, 5 accessed, 6 dirty, 7 huge (a leaf above level 1),
/// 8 global, 9 untracked (privileged AVAIL1), 10 readable (software: x86 has no R bit),
/// 11 and 52 the user's AVAIL1/AVAIL2, 53 host copy (software), 59..61 cache policy, 63
/// no-execute, 12..51 the physical address. An entry of a level above 1 that is present and not huge points to a
/// child node.
/// </summary>
internal static class Pte
{
    internal const ulong Present = 1UL << 0, Writable = 1UL << 1, User = 1UL << 2;
    internal const ulong Accessed = 1UL << 5, Dirty = 1UL << 6, Huge = 1UL << 7, Global = 1UL << 8;
    internal const ulong Untracked = 1UL << 9, Readable = 1UL << 10, Avail1 = 1UL << 11, Avail2 = 1UL << 52;
    internal const ulong NoExec = 1UL << 63;

    /// <summary>
    /// A host copy: the leaf's tracked frame is shared (with a snapshot) and the host maps it
    /// <c>MAP_PRIVATE</c> with the entry's rights, so the host itself copies the page on its first
    /// write; from then on the arena's anonymous page, not the frame, holds the contents. Only
    /// the snapshot paths make such entries (see <c>VmSpace.UsesHostCopies</c>).
    /// </summary>
    internal const ulong HostCopy = 1UL << 53;
    internal const ulong AddrMask = 0x000F_FFFF_FFFF_F000UL;
    private const int CacheShift = 59;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsPresent(ulong pte) => (pte & Present) != 0;

    /// <summary>Whether a present entry at <paramref name="level"/> maps a page rather than a child node.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsLast(ulong pte, int level) => level == 1 || (pte & Huge) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Paddr(ulong pte) => pte & AddrMask;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsUntracked(ulong pte) => (pte & Untracked) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsHostCopy(ulong pte) => (pte & HostCopy) != 0;

    /// <summary>A leaf entry mapping <paramref name="paddr"/> with <paramref name="prop"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong Leaf(ulong paddr, PageProperty prop, int level)
    {
        ulong pte = Present | (paddr & AddrMask) | FromProp(prop);
        if (level > 1) pte |= Huge;
        return pte;
    }

    /// <summary>An entry pointing to a child node (the node itself is kept beside the entry).</summary>
    internal static ulong Table() => Present | Writable | User | Readable;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong FromProp(PageProperty prop)
    {
        PageFlags f = prop.Flags;
        ulong pte = 0;
        if ((f & PageFlags.R) != 0) pte |= Readable;
        if ((f & PageFlags.W) != 0) pte |= Writable;
        if ((f & PageFlags.X) == 0) pte |= NoExec;
        if ((f & PageFlags.Accessed) != 0) pte |= Accessed;
        if ((f & PageFlags.Dirty) != 0) pte |= Dirty;
        if ((f & PageFlags.Avail1) != 0) pte |= Avail1;
        if ((f & PageFlags.Avail2) != 0) pte |= Avail2;
        if ((prop.PrivFlags & PrivilegedPageFlags.User) != 0) pte |= User;
        if ((prop.PrivFlags & PrivilegedPageFlags.Global) != 0) pte |= Global;
        if ((prop.PrivFlags & PrivilegedPageFlags.Avail1) != 0) pte |= Untracked;
        pte |= ((ulong)prop.Cache & 7) << CacheShift; // its 3-bit field only: never bits 62 and 63 (no-execute)
        return pte;
    }

    internal static PageProperty ToProp(ulong pte)
    {
        PageFlags f = PageFlags.None;
        if ((pte & Readable) != 0) f |= PageFlags.R;
        if ((pte & Writable) != 0) f |= PageFlags.W;
        if ((pte & NoExec) == 0) f |= PageFlags.X;
        if ((pte & Accessed) != 0) f |= PageFlags.Accessed;
        if ((pte & Dirty) != 0) f |= PageFlags.Dirty;
        if ((pte & Avail1) != 0) f |= PageFlags.Avail1;
        if ((pte & Avail2) != 0) f |= PageFlags.Avail2;
        PrivilegedPageFlags p = PrivilegedPageFlags.None;
        if ((pte & User) != 0) p |= PrivilegedPageFlags.User;
        if ((pte & Global) != 0) p |= PrivilegedPageFlags.Global;
        if ((pte & Untracked) != 0) p |= PrivilegedPageFlags.Avail1;
        return new PageProperty(f, (CachePolicy)((pte >> CacheShift) & 7), p);
    }

    /// <summary>
    /// Whether tracked leaf <paramref name="next"/>, <paramref name="offset"/> bytes after tracked
    /// leaf <paramref name="first"/>, continues its host mapping: the frame that far on in the
    /// file, the same host rights and the same kind of mapping (a host copy or not). Such leaves
    /// are mirrored by one host mapping.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool ContinuesMapping(ulong first, ulong next, ulong offset)
    {
        const ulong hostBits = Present | Readable | Writable | NoExec | HostCopy | Untracked;
        return (next & hostBits) == (first & hostBits) && !IsUntracked(first) && Paddr(next) == Paddr(first) + offset;
    }

    /// <summary>The host protection (<c>PROT_*</c>) that mirrors a leaf entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int HostProt(ulong pte) =>
        ((pte & Readable) != 0 ? Libc.PROT_READ : 0)
        | ((pte & Writable) != 0 ? Libc.PROT_WRITE : 0)
        | ((pte & NoExec) == 0 ? Libc.PROT_EXEC : 0);

    /// <summary>Replaces the property bits of a leaf entry, keeping its address, huge, untracked and host-copy bits.</summary>
    internal static ulong WithProp(ulong pte, PageProperty prop)
    {
        const ulong keep = Present | AddrMask | Huge | Untracked | HostCopy;
        ulong bits = FromProp(prop) & ~Untracked;
        return (pte & keep) | bits;
    }
}
