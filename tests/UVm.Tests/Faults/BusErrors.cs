using NUnit.Framework;
using UVm.Faults;
using UVm.Host;
using UVm.Io;
using UVm.Spaces;
using UVm.Interop;

namespace UVm.Tests.Faults;

/// <summary>
/// A SIGBUS (the file behind an I/O-memory mapping was truncated under it) is reported as a bus
/// error with the exact byte count, never handed to the page-fault handler, and never sticky.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class BusErrors : GuestFixture
{
    private int _fd = -1;
    private IoMem _io = null!;
    private DemandPager _pager = null!;

    [SetUp]
    public void MapAFileThatWillShrink()
    {
        _fd = Libc.MemfdCreate("uvm-test-sigbus", Libc.MFD_CLOEXEC);
        Assert.That(_fd, Is.GreaterThanOrEqualTo(0), "memfd_create");
        Resize(2 * Page);
        _io = IoMem.FromFile(_fd, 0, 2 * Page);
        using (var cursor = Space.CursorMut(VaddrRange.FromLength(Va, 2 * Page)))
            cursor.MapIoMem(_io, PageProperty.New(PageFlags.RW), 2 * Page, 0);
        var writer = Space.Writer(Va, 2 * Page);
        Assert.That(writer.WriteFallible(PatternOf(Va, (int)(2 * Page))).IsOk, "the file is reachable before it shrinks");
        _pager = new DemandPager();
        Space.RegisterPageFaultHandler(_pager.Handle);
    }

    [TearDown]
    public void CloseTheFile()
    {
        _io.Dispose();
        Libc.Close(_fd);
    }

    private void Resize(ulong bytes) => Assert.That(Libc.Ftruncate(_fd, (long)bytes), Is.Zero, "ftruncate");

    [Test]
    public void Reading_past_the_end_of_the_file_is_a_bus_error()
    {
        Resize(0);
        var reader = Space.Reader(Va + 16, 100);
        CopyResult r = reader.ReadFallible(new byte[100]);

        Assert.That(r.Bytes, Is.Zero);
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + 16, PageFaultAccess.Read, PageFaultKind.BusError, 7)));
        Assert.That(r.Fault!.Value.IsBusError, Is.True);
        Assert.That(reader.Remain, Is.EqualTo(100UL));
    }

    [Test]
    public void A_copy_stops_exactly_where_the_file_ends()
    {
        Resize(Page);
        byte[] dst = Filled(100, 0xEE);
        var reader = Space.Reader(Va + Page - 10, 100);
        CopyResult r = reader.ReadFallible(dst);

        Assert.That(r.Bytes, Is.EqualTo(10UL));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Read, PageFaultKind.BusError, 7)));
        Assert.That(dst[..10], Is.EqualTo(PatternOf(Va + Page - 10, 10)));
        Assert.That(dst[10..], Is.All.EqualTo((byte)0xEE));
    }

    [Test]
    public void Writing_past_the_end_of_the_file_is_a_bus_error()
    {
        Resize(0);
        var writer = Space.Writer(Va + Page, 8);
        IoResult<ulong> r = writer.WriteVal(42UL);

        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Write, PageFaultKind.BusError, 7)));
        Assert.That(writer.Avail, Is.EqualTo(8UL));
    }

    [Test]
    public void A_bus_error_is_not_given_to_the_page_fault_handler()
    {
        Resize(0);
        var reader = Space.Reader(Va, 8);
        Assert.That(reader.ReadVal<ulong>().Fault?.Kind, Is.EqualTo(PageFaultKind.BusError));
        var writer = Space.Writer(Va, Page);
        Assert.That(writer.FillZeros(Page).Fault?.Kind, Is.EqualTo(PageFaultKind.BusError));

        Assert.That(_pager.Calls, Is.Zero);
        Assert.That(Space.HandledFaults, Is.Zero);
        Assert.That(Space.UnresolvedFaults, Is.EqualTo(2));
    }

    [Test]
    public void The_mapping_works_again_once_the_file_grows_back()
    {
        Resize(0);
        var before = Space.Reader(Va, 8);
        Assert.That(before.ReadVal<ulong>().Error, Is.EqualTo(UVmError.PageFault));

        Resize(2 * Page);
        byte[] dst = Filled((int)(2 * Page), 0xEE);
        var after = Space.Reader(Va, 2 * Page);
        Assert.That(after.ReadFallible(dst).IsOk, Is.True);
        Assert.That(dst, Is.All.Zero, "the truncated contents are gone; the file reads as zero");
    }
}
