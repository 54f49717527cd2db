using NUnit.Framework;
using UVm.Faults;
using UVm.Io;
using UVm.Tests.Faults;

namespace UVm.Tests.Io;

/// <summary><c>FillZeros</c> on guest memory: exact to the byte like a copy.</summary>
[TestFixture, NonParallelizable]
public sealed class GuestFillZeros : GuestFixture
{
    [Test]
    public void Fill_stops_exactly_at_a_read_only_page()
    {
        var writable = MapFilled(Va, 0xAB);
        var readOnly = MapFilled(Va + Page, 0xCD, PageFlags.R);

        var writer = Space.Writer(Va + 100, 2 * Page);
        CopyResult r = writer.FillZeros(2 * Page);

        Assert.That(r.Bytes, Is.EqualTo(Page - 100));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Write, PageFaultKind.Protection, 11)));
        byte[] first = ContentsOf(writable);
        Assert.That(first[..100], Is.All.EqualTo((byte)0xAB));
        Assert.That(first[100..], Is.All.Zero);
        Assert.That(ContentsOf(readOnly), Is.All.EqualTo((byte)0xCD));
        Assert.That(writer.Avail, Is.EqualTo(Page + 100));
        Assert.That(writer.GuestAddress(), Is.EqualTo(Va + Page));
    }

    [Test]
    public void Fill_at_an_unmapped_page_zeroes_nothing()
    {
        var writer = Space.Writer(Va, Page);
        CopyResult r = writer.FillZeros(Page);

        Assert.That(r.Bytes, Is.Zero);
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va, PageFaultAccess.Write, PageFaultKind.NotPresent, 11)));
        Assert.That(writer.Avail, Is.EqualTo(Page));
    }

    [Test]
    public void Fill_zeroes_at_most_the_room_left()
    {
        var frame = MapFilled(Va, 0xAB);
        var writer = Space.Writer(Va + 10, 50);
        CopyResult r = writer.FillZeros(1000);

        Assert.That(r, Is.EqualTo(new CopyResult(50, null, null)));
        Assert.That(writer.HasAvail, Is.False);
        byte[] got = ContentsOf(frame);
        Assert.That(got[..10], Is.All.EqualTo((byte)0xAB));
        Assert.That(got[10..60], Is.All.Zero);
        Assert.That(got[60..], Is.All.EqualTo((byte)0xAB));
    }

    [Test]
    public void Fill_across_pages_is_complete()
    {
        var a = MapFilled(Va, 0xAB);
        var b = MapFilled(Va + Page, 0xAB);
        var writer = Space.Writer(Va + 1, 2 * Page - 2);
        Assert.That(writer.FillZeros(2 * Page).IsOk, Is.True);
        Assert.That(ContentsOf(a)[1..], Is.All.Zero);
        Assert.That(ContentsOf(b)[..^1], Is.All.Zero);
        Assert.That(ContentsOf(b)[^1], Is.EqualTo((byte)0xAB));
    }
}
