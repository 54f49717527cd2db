using UVm.Host;
using UVm.PageTable;

namespace UVm.Spaces;

/// <summary>
/// Proves that the host mirrors a space's page table: after every dispatch, each mapped page
/// maps exactly its frame (backing file and offset = <c>Paddr</c>) with exactly the entry's
/// R/W/X, and every other page of the arena is reserved <c>PROT_NONE</c>.
/// </summary>
/// <remarks>
/// Both sides are reduced to maximal runs (adjacent pages with the same file, contiguous
/// offsets and the same rights; holes merged) and the two run lists compared. The host side
/// is read from <c>/proc/self/maps</c>, the kernel's own account. Pending (undispatched)
/// flushes show up as differences, as they should.
/// </remarks>
public static class HostMirror
{
    private readonly record struct Run(ulong Start, ulong End, string Perms, ulong Inode, ulong Offset)
    {
        public bool Continues(in Run next) =>
            next.Start == End && next.Perms == Perms && next.Inode == Inode
            && (Inode == 0 || next.Offset == Offset + (End - Start));

        public override string ToString() =>
            Inode == 0 ? $"[0x{Start:x}, 0x{End:x}) {Perms} reserved" : $"[0x{Start:x}, 0x{End:x}) {Perms} inode {Inode} offset 0x{Offset:x}";
    }

    /// <summary>The differences between <paramref name="space"/>'s page table and its host mappings; empty when they agree.</summary>
    public static IReadOnlyList<string> Compare(VmSpace space)
    {
        List<Run> expected = Expected(space);
        List<Run> actual = Actual(space);
        var diffs = new List<string>();
        int n = Math.Max(expected.Count, actual.Count);
        for (int i = 0; i < n && diffs.Count < 16; i++)
        {
            Run? e = i < expected.Count ? expected[i] : null;
            Run? a = i < actual.Count ? actual[i] : null;
            if (e != a) diffs.Add($"page table says {e?.ToString() ?? "nothing"}, host has {a?.ToString() ?? "nothing"}");
        }
        return diffs;
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> listing the differences unless the host mirrors the table.</summary>
    public static void Verify(VmSpace space)
    {
        IReadOnlyList<string> diffs = Compare(space);
        if (diffs.Count > 0) throw new InvalidOperationException("host mappings differ from the page table:\n" + string.Join("\n", diffs));
    }

    private static List<Run> Expected(VmSpace space)
    {
        var runs = new List<Run>();
        ulong hole = 0;
        var cursor = new PtCursor(space.Table, 0, space.Size, mutable: false);
        try
        {
            while (cursor.Va < space.Size)
            {
                ulong? va = cursor.FindNext(space.Size - cursor.Va);
                if (va is null) break;
                PtSlot slot = cursor.Query();
                if (slot.Va > hole) Add(runs, new Run(hole, slot.Va, "---p", 0, 0));
                Add(runs, MappedRun(space, slot));
                hole = slot.Va + slot.Size;
                cursor.MoveForward();
            }
        }
        finally
        {
            cursor.Release();
        }
        if (hole < space.Size) Add(runs, new Run(hole, space.Size, "---p", 0, 0));
        return runs;
    }

    private static Run MappedRun(VmSpace space, PtSlot slot)
    {
        int prot = Pte.HostProt(slot.Entry);
        string perms = $"{((prot & Libc.PROT_READ) != 0 ? 'r' : '-')}{((prot & Libc.PROT_WRITE) != 0 ? 'w' : '-')}{((prot & Libc.PROT_EXEC) != 0 ? 'x' : '-')}s";
        ulong paddr = Pte.Paddr(slot.Entry);
        if (!Pte.IsUntracked(slot.Entry))
            return new Run(slot.Va, slot.Va + slot.Size, perms, space.Pool.FileIdentity.Ino, paddr);
        if (space.FindIoMemByPaddr(paddr) is not { } found)
            return new Run(slot.Va, slot.Va + slot.Size, perms, ulong.MaxValue, paddr); // cannot match: an unknown region
        return new Run(slot.Va, slot.Va + slot.Size, perms, found.Io.Identity.Ino, found.Io.FileOffset + found.Offset);
    }

    private static List<Run> Actual(VmSpace space)
    {
        ulong baseAddr = (ulong)space.HostBase;
        var runs = new List<Run>();
        foreach (HostVma vma in ProcMaps.Read(baseAddr, baseAddr + space.Size))
        {
            ulong start = Math.Max(vma.Start, baseAddr), end = Math.Min(vma.End, baseAddr + space.Size);
            ulong offset = vma.Inode == 0 ? 0 : vma.Offset + (start - vma.Start);
            Add(runs, new Run(start - baseAddr, end - baseAddr, vma.Perms, vma.Inode, offset));
        }
        return runs;
    }

    private static void Add(List<Run> runs, Run next)
    {
        if (runs.Count > 0 && runs[^1].Continues(next))
        {
            Run last = runs[^1];
            runs[^1] = last with { End = next.End };
        }
        else
        {
            runs.Add(next);
        }
    }
}
