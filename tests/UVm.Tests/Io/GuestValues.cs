using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NUnit.Framework;
using UVm.Faults;
using UVm.Io;
using UVm.Tests.Faults;

namespace UVm.Tests.Io;

/// <summary>
/// <c>ReadVal</c>/<c>WriteVal</c> on guest memory: one value or nothing; on a fault the cursor
/// does not move.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class GuestValues : GuestFixture
{
    /// <summary>A 16-byte value that is not a primitive: it goes through the copy path.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public readonly record struct Pair(ulong Low, ulong High);

    private static IEnumerable<TestCaseData> Values()
    {
        yield return new TestCaseData((byte)0xA5).SetArgDisplayNames("1 byte");
        yield return new TestCaseData((ushort)0xBEEF).SetArgDisplayNames("2 bytes");
        yield return new TestCaseData(0xDEADBEEFu).SetArgDisplayNames("4 bytes");
        yield return new TestCaseData(0x0123456789ABCDEFUL).SetArgDisplayNames("8 bytes");
        yield return new TestCaseData(new Pair(0x1122334455667788, 0x99AABBCCDDEEFF00)).SetArgDisplayNames("16 bytes");
    }

    private static IEnumerable<TestCaseData> WideValues() => Values().Skip(1);

    private static unsafe byte[] BytesOf<T>(T value) where T : unmanaged => new ReadOnlySpan<byte>(&value, sizeof(T)).ToArray();

    [TestCaseSource(nameof(Values))]
    public unsafe void A_value_round_trips_at_an_unaligned_address<T>(T value) where T : unmanaged
    {
        var frame = MapFilled(Va, 0x5A);
        const int offset = 3;

        var writer = Space.Writer(Va + offset, 64);
        IoResult<T> written = writer.WriteVal(value);
        Assert.That(written.IsOk, Is.True);
        Assert.That(writer.Avail, Is.EqualTo(64UL - (ulong)sizeof(T)));

        var reader = Space.Reader(Va + offset, 64);
        IoResult<T> read = reader.ReadVal<T>();
        Assert.That(read, Is.EqualTo(new IoResult<T>(value, null, null)));
        Assert.That(reader.Remain, Is.EqualTo(64UL - (ulong)sizeof(T)));

        byte[] got = ContentsOf(frame);
        Assert.That(got[offset..(offset + sizeof(T))], Is.EqualTo(BytesOf(value)));
        Assert.That(got[..offset], Is.All.EqualTo((byte)0x5A));
        Assert.That(got[(offset + sizeof(T))..], Is.All.EqualTo((byte)0x5A));
    }

    [TestCaseSource(nameof(Values))]
    public unsafe void Reading_a_value_from_a_hole_fails_without_moving<T>(T value) where T : unmanaged
    {
        _ = value;
        var reader = Space.Reader(Va, 64);
        IoResult<T> r = reader.ReadVal<T>();

        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Value, Is.EqualTo(default(T)));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va, PageFaultAccess.Read, PageFaultKind.NotPresent, 11)));
        Assert.That(reader.Remain, Is.EqualTo(64UL));
        Assert.That(() => r.Unwrap(), Throws.TypeOf<UVmException>().With.Property(nameof(UVmException.Error)).EqualTo(UVmError.PageFault));
    }

    [TestCaseSource(nameof(Values))]
    public unsafe void Writing_a_value_to_a_read_only_page_fails_and_changes_nothing<T>(T value) where T : unmanaged
    {
        var frame = MapFilled(Va, 0x5A, PageFlags.R);
        var writer = Space.Writer(Va + 8, 64);
        IoResult<T> r = writer.WriteVal(value);

        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + 8, PageFaultAccess.Write, PageFaultKind.Protection, 11)));
        Assert.That(writer.Avail, Is.EqualTo(64UL));
        Assert.That(ContentsOf(frame), Is.All.EqualTo((byte)0x5A));
    }

    [TestCaseSource(nameof(WideValues))]
    public unsafe void A_value_straddling_into_an_unmapped_page_fails_without_moving<T>(T value) where T : unmanaged
    {
        var frame = MapFilled(Va, 0x5A);
        ulong at = Va + Page - 1;

        var reader = Space.Reader(at, 64);
        IoResult<T> read = reader.ReadVal<T>();
        Assert.That(read.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(read.Fault?.Address, Is.EqualTo(Va + Page), "the first inaccessible byte");
        Assert.That(read.Fault?.Kind, Is.EqualTo(PageFaultKind.NotPresent));
        Assert.That(reader.Remain, Is.EqualTo(64UL));

        var writer = Space.Writer(at, 64);
        IoResult<T> write = writer.WriteVal(value);
        Assert.That(write.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(write.Fault?.Access, Is.EqualTo(PageFaultAccess.Write));
        Assert.That(writer.Avail, Is.EqualTo(64UL));
        if (sizeof(T) <= 8)
            Assert.That(ContentsOf(frame)[^1], Is.EqualTo((byte)0x5A), "a single store is all or nothing");
    }

    [Test]
    public void A_value_needs_room_for_all_its_bytes()
    {
        MapPatterned(Va);
        var reader = Space.Reader(Va, 7);
        Assert.Throws<ArgumentOutOfRangeException>(() => { var r = Space.Reader(Va, 7); r.ReadVal<ulong>(); });
        Assert.Throws<ArgumentOutOfRangeException>(() => { var w = Space.Writer(Va, 3); w.WriteVal(1u); });
        Assert.That(reader.ReadVal<uint>().Value, Is.EqualTo(Unsafe.ReadUnaligned<uint>(ref PatternOf(Va, 4)[0])));
        Assert.That(reader.Remain, Is.EqualTo(3UL));
    }

    [Test]
    public void Consecutive_values_read_back_in_order()
    {
        MapPatterned(Va);
        var writer = Space.Writer(Va, Page);
        for (uint i = 0; i < 100; i++) Assert.That(writer.WriteVal(i * 3).IsOk);
        var reader = Space.Reader(Va, Page);
        for (uint i = 0; i < 100; i++) Assert.That(reader.ReadVal<uint>().Value, Is.EqualTo(i * 3));
        Assert.That(reader.GuestAddress(), Is.EqualTo(Va + 400));
    }
}
