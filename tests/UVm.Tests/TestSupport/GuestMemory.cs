using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.TestSupport;

/// <summary>What one mapped slot of a space looks like: the unit of "the space is unchanged".</summary>
/// <param name="Range">The slot.</param>
/// <param name="Paddr">The frame (or I/O memory) address.</param>
/// <param name="Io">Whether the slot is untracked I/O memory.</param>
/// <param name="Prop">Rights, cache policy, privileged bits.</param>
public readonly record struct MappedSlot(VaddrRange Range, ulong Paddr, bool Io, PageProperty Prop)
{
    public override string ToString() => $"{Range} {(Io ? "io" : "ram")} 0x{Paddr:x} {Prop}";
}

/// <summary>
/// The one set of helpers every fixture maps, snapshots and checks guest memory with: frames
/// with known contents, mapping and unmapping through a cursor of their own, what a range holds
/// (as slots or in plain words), and whether the host mirrors the page table.
/// </summary>
public static class GuestMemory
{
    private const ulong Page = Paging.PageSize;

    /// <summary>A new frame of <paramref name="pool"/> holding <paramref name="contents"/> (the rest zero).</summary>
    public static UFrame NewFrame(FramePool pool, ReadOnlySpan<byte> contents)
    {
        UFrame frame = pool.AllocFrame();
        VmWriter<Infallible> w = frame.Writer();
        w.Write(contents);
        return frame;
    }

    /// <summary>Maps <paramref name="frame"/> at <paramref name="va"/> through a cursor of its own (dispatched on return).</summary>
    public static void MapAt(VmSpace space, ulong va, UFrame frame, PageProperty prop)
    {
        using CursorMut c = space.CursorMut(VaddrRange.FromLength(va, Page));
        c.Map(frame, prop);
    }

    /// <summary>Maps a fresh frame holding <paramref name="contents"/> at <paramref name="va"/>; the mapping keeps the frame, the handle is dropped. Returns its address.</summary>
    public static ulong MapNewFrame(VmSpace space, ulong va, ReadOnlySpan<byte> contents, PageFlags flags = PageFlags.RW)
    {
        using UFrame frame = NewFrame(space.Pool, contents);
        MapAt(space, va, frame, PageProperty.New(flags));
        return frame.Paddr;
    }

    /// <summary>Unmaps <c>[va, va + len)</c> through a cursor of its own; returns the frames unmapped.</summary>
    public static ulong Unmap(VmSpace space, ulong va, ulong len)
    {
        using CursorMut c = space.CursorMut(VaddrRange.FromLength(va, len));
        return c.Unmap(len);
    }

    /// <summary>Every mapped slot of <paramref name="range"/> of <paramref name="space"/>, in address order (frame handles released again).</summary>
    public static List<MappedSlot> Slots(VmSpace space, VaddrRange range)
    {
        Assert.That(Cursor.HeldByCurrentThread, Is.LessThanOrEqualTo(0), "a cursor is alive on this thread; another one could deadlock");
        var slots = new List<MappedSlot>();
        using Cursor c = space.Cursor(range);
        while (c.VirtAddr < range.End)
        {
            if (c.FindNext(range.End - c.VirtAddr) is null) break;
            (VaddrRange r, VmQueriedItem? item) = c.Query();
            using (item)
            {
                slots.Add(item switch
                {
                    MappedRam ram => new MappedSlot(r, ram.Frame.Paddr, false, ram.Prop),
                    MappedIoMem io => new MappedSlot(r, io.Paddr, true, io.Prop),
                    _ => throw new InvalidOperationException("FindNext stopped on a hole"),
                });
            }
            if (r.End >= range.End) break;
            c.Jump(r.End);
        }
        return slots;
    }

    /// <summary>A query result in plain words; disposes its item.</summary>
    public static string Describe((VaddrRange Range, VmQueriedItem? Item) q)
    {
        using VmQueriedItem? item = q.Item;
        return item switch
        {
            null => $"{q.Range} hole",
            MappedRam ram => $"{q.Range} ram 0x{ram.Frame.Paddr:x} {ram.Prop}",
            MappedIoMem io => $"{q.Range} io 0x{io.Paddr:x} {io.Prop}",
            _ => throw new InvalidOperationException("unknown item"),
        };
    }

    /// <summary>Every slot (holes included) of a query, in plain words: the state a failed call must leave unchanged.</summary>
    public static List<string> Describe(IEnumerable<(VaddrRange Range, VmQueriedItem? Item)> slots) => slots.Select(Describe).ToList();

    /// <summary>
    /// The differences between <paramref name="space"/>'s page table and its host mappings, from
    /// one read of the host, never retried: a difference reported is a difference.
    /// </summary>
    /// <remarks>
    /// <para>Why one read is enough. <c>/proc/self/maps</c> is not read atomically: the kernel
    /// returns at most a page of it per <c>read</c> call (seq_file; measured: a 198 KB file took
    /// 49 calls even with a 4 MiB buffer), so another thread's mmap between two calls can tear the
    /// view. But only the lines of mappings that change during the read tear: measured on Linux
    /// 6.18 with two threads splitting and merging mappings of one region and a third mapping and
    /// unmapping elsewhere, 2000 reads showed overlapping lines in 86 of them, all inside the
    /// churning region, while an untouched 2000-mapping region was printed exactly every time
    /// (and the kernel documents that whatever stays at an address through the walk is printed).
    /// <see cref="HostMirror.Compare"/> holds the space's whole page table while it reads, and the
    /// space's host mappings only change under a cursor of the space, so nothing in its arena
    /// changes during the read: its lines are exact. A read that still contradicts itself inside
    /// the arena (overlapping lines) is discarded by the checker and read again; that never
    /// hides a difference, it only refuses an impossible host view.</para>
    /// <para>The earlier helper read again (up to 5 times) while differences were reported, so a
    /// real mismatch that anything repaired between two reads went unreported.</para>
    /// </remarks>
    public static MirrorReport MirrorDiffs(VmSpace space) => HostMirror.Compare(space);

    /// <summary>Whether the host page at <paramref name="addr"/> is present, from <c>/proc/self/pagemap</c> (bit 63): a load or store there would have populated it.</summary>
    public static bool IsHostPagePresent(nint addr)
    {
        using var pagemap = new FileStream("/proc/self/pagemap", FileMode.Open, FileAccess.Read);
        pagemap.Seek((long)((ulong)addr / Paging.PageSize * 8), SeekOrigin.Begin);
        var entry = new byte[8];
        pagemap.ReadExactly(entry);
        return (BitConverter.ToUInt64(entry) & (1UL << 63)) != 0;
    }

    /// <summary>Asserts that <paramref name="space"/>'s host mirrors its page table.</summary>
    public static void AssertMirrors(VmSpace space, string? what = null)
    {
        MirrorReport diffs = MirrorDiffs(space);
        Assert.That(diffs, Is.Empty, $"{what ?? $"space at 0x{space.HostBase:x}"}: host mappings differ from the page table:\n{diffs}");
    }
}
