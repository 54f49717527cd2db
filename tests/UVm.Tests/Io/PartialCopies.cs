using NUnit.Framework;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Tests.Faults;

namespace UVm.Tests.Io;

/// <summary>
/// A fallible copy that meets an unresolved fault stops at the exact faulting byte: everything
/// before it arrived, nothing after it was touched, and the cursors moved by exactly the count.
/// </summary>
[TestFixture, NonParallelizable]
public sealed unsafe class PartialCopies : GuestFixture
{
    [Test]
    public void Read_stops_exactly_at_the_first_unmapped_byte(
        [Values(0, 1, 2049, 4095)] int start, [Values(1, 2, 3)] int pages)
    {
        MapPatternedPages(Va, pages);
        ulong from = Va + (ulong)start, hole = Va + (ulong)pages * Page;
        int reachable = (int)(hole - from), want = reachable + 300;
        byte[] dst = Filled(want, 0xEE);

        var reader = Space.Reader(from, (ulong)want);
        CopyResult r = reader.ReadFallible(dst);

        Assert.That(r.Bytes, Is.EqualTo((ulong)reachable));
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.IsOk, Is.False);
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(hole, PageFaultAccess.Read, PageFaultKind.NotPresent, 11)));
        Assert.That(dst[..reachable], Is.EqualTo(PatternOf(from, reachable)), "the bytes before the fault arrived");
        Assert.That(dst[reachable..], Is.All.EqualTo((byte)0xEE), "the bytes after the fault were not touched");
        Assert.That(reader.Remain, Is.EqualTo((ulong)(want - reachable)));
        Assert.That(reader.GuestAddress(), Is.EqualTo(hole));
    }

    [Test]
    public void Write_stops_exactly_at_the_first_read_only_byte(
        [Values(0, 1, 2049, 4095)] int start, [Values(1, 2, 3)] int pages)
    {
        var frames = new List<UFrame>();
        for (int i = 0; i < pages; i++) frames.Add(MapFilled(Va + (ulong)i * Page, 0x11));
        ulong from = Va + (ulong)start, readOnly = Va + (ulong)pages * Page;
        UFrame guard = MapFilled(readOnly, 0x22, PageFlags.R);
        int reachable = (int)(readOnly - from), want = reachable + 300;
        byte[] src = PatternOf(0x77_0000, want);

        var writer = Space.Writer(from, (ulong)want);
        CopyResult r = writer.WriteFallible(src);

        Assert.That(r.Bytes, Is.EqualTo((ulong)reachable));
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(readOnly, PageFaultAccess.Write, PageFaultKind.Protection, 11)));
        byte[] written = frames.SelectMany(ContentsOf).ToArray();
        Assert.That(written[..start], Is.All.EqualTo((byte)0x11), "bytes before the copy's start are untouched");
        Assert.That(written[start..], Is.EqualTo(src[..reachable]), "the bytes before the fault arrived");
        Assert.That(ContentsOf(guard), Is.All.EqualTo((byte)0x22), "the read-only page is unchanged");
        Assert.That(writer.Avail, Is.EqualTo((ulong)(want - reachable)));
        Assert.That(writer.GuestAddress(), Is.EqualTo(readOnly));
    }

    [Test]
    public void Write_to_an_unmapped_page_is_a_not_present_write_fault()
    {
        var frame = MapFilled(Va, 0x11);
        var writer = Space.Writer(Va + Page - 10, 20);
        CopyResult r = writer.WriteFallible(Filled(20, 0x99));

        Assert.That(r.Bytes, Is.EqualTo(10UL));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Write, PageFaultKind.NotPresent, 11)));
        Assert.That(ContentsOf(frame)[^10..], Is.All.EqualTo((byte)0x99));
    }

    [Test]
    public void Read_of_a_page_mapped_without_rights_is_a_protection_fault()
    {
        MapPatterned(Va);
        MapPatterned(Va + Page, PageFlags.None);
        var reader = Space.Reader(Va + 4000, 200);
        CopyResult r = reader.ReadFallible(new byte[200]);

        Assert.That(r.Bytes, Is.EqualTo(96UL));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Read, PageFaultKind.Protection, 11)));
    }

    [Test]
    public void A_hole_in_the_middle_page_stops_the_copy_and_can_be_skipped()
    {
        MapPatterned(Va);
        MapPatterned(Va + 2 * Page);
        ulong from = Va + 100;
        byte[] dst = Filled((int)(3 * Page), 0xEE);

        var reader = Space.Reader(from, 3 * Page - 100);
        CopyResult first = reader.ReadFallible(dst);
        Assert.That(first.Bytes, Is.EqualTo(Page - 100));
        Assert.That(first.Fault?.Address, Is.EqualTo(Va + Page));
        Assert.That(dst[..(int)(Page - 100)], Is.EqualTo(PatternOf(from, (int)(Page - 100))));
        Assert.That(dst[(int)(Page - 100)..], Is.All.EqualTo((byte)0xEE));

        reader.Skip(Page);
        CopyResult rest = reader.ReadFallible(dst);
        Assert.That(rest.IsOk, Is.True);
        Assert.That(rest.Bytes, Is.EqualTo(Page));
        Assert.That(dst[..(int)Page], Is.EqualTo(PatternOf(Va + 2 * Page, (int)Page)));
        Assert.That(reader.HasRemain, Is.False);
    }

    [Test]
    public void Read_into_a_writer_advances_both_cursors_by_the_count()
    {
        MapPatterned(Va);
        using var target = Pool.AllocFrame();
        var writer = target.Writer();
        writer.Skip(8);

        var reader = Space.Reader(Va + Page - 1000, 3000);
        CopyResult r = reader.ReadFallible(ref writer);

        Assert.That(r.Bytes, Is.EqualTo(1000UL));
        Assert.That(r.Fault?.Address, Is.EqualTo(Va + Page));
        Assert.That(reader.Remain, Is.EqualTo(2000UL));
        Assert.That(writer.Avail, Is.EqualTo(Page - 8 - 1000));
        byte[] got = ContentsOf(target);
        Assert.That(got[..8], Is.All.Zero);
        Assert.That(got[8..1008], Is.EqualTo(PatternOf(Va + Page - 1000, 1000)));
        Assert.That(got[1008..], Is.All.Zero);
    }

    [Test]
    public void Write_from_a_reader_advances_both_cursors_by_the_count()
    {
        var frame = MapFilled(Va, 0x11);
        MapFilled(Va + Page, 0x22, PageFlags.R);
        byte[] src = PatternOf(0x99_0000, 5000);

        fixed (byte* p = src)
        {
            var reader = InfallibleIo.ReaderOver(p, (ulong)src.Length);
            var writer = Space.Writer(Va + Page - 700, 5000);
            CopyResult r = writer.WriteFallible(ref reader);

            Assert.That(r.Bytes, Is.EqualTo(700UL));
            Assert.That(r.Fault?.Access, Is.EqualTo(PageFaultAccess.Write));
            Assert.That(reader.Remain, Is.EqualTo(4300UL));
            Assert.That(writer.Avail, Is.EqualTo(4300UL));
        }
        Assert.That(ContentsOf(frame)[^700..], Is.EqualTo(src[..700]));
    }

    [Test]
    public void A_copy_over_mapped_pages_is_complete_in_both_directions()
    {
        MapPatternedPages(Va, 3);
        byte[] src = PatternOf(0x12_3000, (int)(3 * Page - 7));
        var writer = Space.Writer(Va + 7, (ulong)src.Length);
        CopyResult w = writer.WriteFallible(src);
        Assert.That(w, Is.EqualTo(new CopyResult((ulong)src.Length, null, null)));
        Assert.That(writer.HasAvail, Is.False);

        byte[] back = new byte[src.Length];
        var reader = Space.Reader(Va + 7, (ulong)src.Length);
        CopyResult r = reader.ReadFallible(back);
        Assert.That(r, Is.EqualTo(new CopyResult((ulong)src.Length, null, null)));
        Assert.That(back, Is.EqualTo(src));
    }

    [Test]
    public void A_copy_takes_the_shorter_of_the_two_sides()
    {
        MapPatternedPages(Va, 2);
        var reader = Space.Reader(Va, 2 * Page);
        byte[] small = new byte[10];
        CopyResult r = reader.ReadFallible(small);
        Assert.That(r.Bytes, Is.EqualTo(10UL));
        Assert.That(reader.Remain, Is.EqualTo(2 * Page - 10));

        var writer = Space.Writer(Va, 5);
        CopyResult w = writer.WriteFallible(new byte[100]);
        Assert.That(w.Bytes, Is.EqualTo(5UL));
        Assert.That(writer.Avail, Is.Zero);
    }

    [Test]
    public void An_empty_copy_at_a_hole_succeeds_without_faulting()
    {
        long unresolved = Space.UnresolvedFaults;
        var reader = Space.Reader(Va, 0);
        Assert.That(reader.ReadFallible(new byte[16]), Is.EqualTo(new CopyResult(0, null, null)));
        var writer = Space.Writer(Va, 64);
        Assert.That(writer.WriteFallible(ReadOnlySpan<byte>.Empty), Is.EqualTo(new CopyResult(0, null, null)));
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(unresolved));
    }

    [Test]
    public void Limit_ends_a_copy_before_the_hole()
    {
        MapPatterned(Va);
        var reader = Space.Reader(Va + 96, 2 * Page);
        reader.Limit(Page - 96);
        byte[] dst = new byte[2 * Page];
        CopyResult r = reader.ReadFallible(dst);
        Assert.That(r, Is.EqualTo(new CopyResult(Page - 96, null, null)));
        Assert.That(Space.UnresolvedFaults, Is.Zero);
    }

    [Test]
    public void An_unresolved_fault_is_counted_once_per_copy()
    {
        var reader = Space.Reader(Va, 3 * Page);
        reader.ReadFallible(new byte[3 * Page]);
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(1));
        Assert.That(Space.HandledFaults, Is.Zero);
        Assert.That(Space.SpuriousFaults, Is.Zero);
    }
}
