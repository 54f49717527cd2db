using NUnit.Framework;
using System.Globalization;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>One line of <c>/proc/self/maps</c>, as the tests parse it (independently of UVm's own parser).</summary>
/// <param name="Start">First host address.</param>
/// <param name="End">First host address past the mapping.</param>
/// <param name="Perms">The permission column, e.g. <c>rw-s</c>.</param>
/// <param name="Offset">File offset of <paramref name="Start"/>.</param>
/// <param name="Inode">Inode of the backing file, 0 for anonymous memory.</param>
internal readonly record struct MapsLine(ulong Start, ulong End, string Perms, ulong Offset, ulong Inode)
{
    /// <summary>The file offset that backs host address <paramref name="address"/>.</summary>
    public ulong OffsetOf(ulong address) => Offset + (address - Start);

    public bool IsReserved => Perms == "---p" && Inode == 0;
}

/// <summary>
/// What the host kernel really maps, read from <c>/proc/self/maps</c>, and the assertions the
/// core tests make about it. Host memory is only touched after the maps show it readable
/// (or writable), so a wrong mapping fails an assertion instead of killing the test process.
/// </summary>
internal static unsafe class HostMaps
{
    /// <summary>Every mapping of the process, in address order.</summary>
    public static List<MapsLine> All()
    {
        var lines = new List<MapsLine>();
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            // start-end perms offset dev inode [path]
            string[] f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            int dash = f[0].IndexOf('-');
            lines.Add(new MapsLine(
                ulong.Parse(f[0].AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                ulong.Parse(f[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                f[1],
                ulong.Parse(f[2], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                ulong.Parse(f[4], CultureInfo.InvariantCulture)));
        }
        return lines;
    }

    /// <summary>The mapping that contains host address <paramref name="address"/>, if any.</summary>
    public static MapsLine? Containing(ulong address)
    {
        foreach (MapsLine l in All())
            if (address >= l.Start && address < l.End) return l;
        return null;
    }

    /// <summary>The host mapping behind guest address <paramref name="va"/> of <paramref name="space"/>; fails if there is none.</summary>
    public static MapsLine At(VmSpace space, ulong va)
    {
        MapsLine? line = Containing(HostAddress(space, va));
        Assert.That(line, Is.Not.Null, $"the host maps nothing at guest 0x{va:x}");
        return line!.Value;
    }

    /// <summary>The permission column at guest address <paramref name="va"/>.</summary>
    public static string PermsAt(VmSpace space, ulong va) => At(space, va).Perms;

    /// <summary>The host mappings inside the space's arena.</summary>
    public static List<MapsLine> InArena(VmSpace space)
    {
        ulong start = (ulong)space.HostBase, end = start + space.Size;
        return All().Where(l => l.End > start && l.Start < end).ToList();
    }

    public static ulong HostAddress(VmSpace space, ulong va) => (ulong)space.HostBase + va;

    /// <summary>Asserts the host maps frame <paramref name="paddr"/> of the space's pool at <paramref name="va"/> with <paramref name="perms"/>.</summary>
    public static void AssertMapsFrame(VmSpace space, ulong va, ulong paddr, string perms)
    {
        MapsLine line = At(space, va);
        Assert.That(line.Inode, Is.EqualTo(space.Pool.FileIdentity.Ino), $"guest 0x{va:x} is not backed by the frame pool: {line}");
        Assert.That(line.OffsetOf(HostAddress(space, va)), Is.EqualTo(paddr), $"guest 0x{va:x} maps the wrong frame: {line}");
        Assert.That(line.Perms, Is.EqualTo(perms), $"guest 0x{va:x} has the wrong rights: {line}");
    }

    /// <summary>Asserts the host maps byte <paramref name="fileOffset"/> of file <paramref name="inode"/> at <paramref name="va"/>.</summary>
    public static void AssertMapsFile(VmSpace space, ulong va, ulong inode, ulong fileOffset, string perms)
    {
        MapsLine line = At(space, va);
        Assert.That(line.Inode, Is.EqualTo(inode), $"guest 0x{va:x} is backed by the wrong file: {line}");
        Assert.That(line.OffsetOf(HostAddress(space, va)), Is.EqualTo(fileOffset), $"guest 0x{va:x} maps the wrong offset: {line}");
        Assert.That(line.Perms, Is.EqualTo(perms), $"guest 0x{va:x} has the wrong rights: {line}");
    }

    /// <summary>Asserts the host keeps <paramref name="va"/> reserved: private, anonymous, <c>PROT_NONE</c>.</summary>
    public static void AssertReserved(VmSpace space, ulong va)
    {
        MapsLine line = At(space, va);
        Assert.That(line.IsReserved, Is.True, $"guest 0x{va:x} should be reserved PROT_NONE, the host has {line}");
    }

    /// <summary>Asserts the page table and the host agree (<see cref="VmSpace.CheckHostMirror"/> is empty).</summary>
    public static void AssertMirrored(VmSpace space)
    {
        // CheckHostMirror takes a cursor over the whole space: with a cursor of ours alive it would deadlock.
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "a cursor is alive on this thread; checking the mirror would deadlock");
        MirrorReport diffs = HostMirror.Compare(space);
        Assert.That(diffs, Is.Empty, "host mappings differ from the page table:\n" + diffs);
    }

    /// <summary>Reads a byte of guest memory straight from the host, after checking the host maps it readable.</summary>
    public static byte Read(VmSpace space, ulong va)
    {
        Assert.That(PermsAt(space, va)[0], Is.EqualTo('r'), $"guest 0x{va:x} is not readable on the host; touching it would crash");
        // SAFETY: /proc/self/maps just showed the page mapped readable, and nothing unmaps it concurrently.
        return *(byte*)(space.HostBase + (nint)va);
    }

    /// <summary>Reads a 64-bit value of guest memory straight from the host (8-byte aligned, within one page).</summary>
    public static ulong ReadU64(VmSpace space, ulong va)
    {
        Assert.That(PermsAt(space, va)[0], Is.EqualTo('r'), $"guest 0x{va:x} is not readable on the host; touching it would crash");
        // SAFETY: as in Read; the value lies within the checked page.
        return *(ulong*)(space.HostBase + (nint)va);
    }

    /// <summary>Asserts every page of <c>[va, va + len)</c> is mapped on the host with access <paramref name="perm"/> ('r' or 'w').</summary>
    public static void AssertAccessible(VmSpace space, ulong va, ulong len, char perm)
    {
        List<MapsLine> lines = All();
        int column = perm == 'r' ? 0 : 1;
        for (ulong a = HostAddress(space, va), end = a + len; a < end;)
        {
            MapsLine? line = lines.Cast<MapsLine?>().FirstOrDefault(l => a >= l!.Value.Start && a < l.Value.End);
            Assert.That(line?.Perms[column], Is.EqualTo(perm), $"host address 0x{a:x} lacks '{perm}': {line}");
            a = line!.Value.End;
        }
    }

    /// <summary>Writes <c>valueAt(offset)</c> at the start of every page of <c>[va, va + len)</c>, after one check that all are writable.</summary>
    public static void TagPages(VmSpace space, ulong va, ulong len, Func<ulong, ulong> valueAt)
    {
        AssertAccessible(space, va, len, 'w');
        // SAFETY: every page of the range was just shown mapped writable.
        for (ulong off = 0; off < len; off += UVm.Paging.PageSize) *(ulong*)(space.HostBase + (nint)(va + off)) = valueAt(off);
    }

    /// <summary>Writes a 64-bit value of guest memory straight on the host, after checking the host maps it writable.</summary>
    public static void WriteU64(VmSpace space, ulong va, ulong value)
    {
        Assert.That(PermsAt(space, va)[1], Is.EqualTo('w'), $"guest 0x{va:x} is not writable on the host; touching it would crash");
        // SAFETY: /proc/self/maps just showed the page mapped writable; the value lies within it.
        *(ulong*)(space.HostBase + (nint)va) = value;
    }
}
