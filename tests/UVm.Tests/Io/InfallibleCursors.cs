using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using UVm.Tests.Faults;

namespace UVm.Tests.Io;

/// <summary>
/// Infallible readers and writers over frames (through the linear map) and over library
/// memory: plain copies, and the cursor arithmetic shared with the fallible ones.
/// </summary>
[TestFixture, NonParallelizable]
public sealed unsafe class InfallibleCursors : GuestFixture
{
    [Test]
    public void A_frame_reads_back_what_was_written()
    {
        using UFrame frame = Pool.AllocFrame();
        byte[] data = PatternOf(0x1000, 100);
        var writer = frame.Writer();
        writer.Skip(10);
        Assert.That(writer.Write(data), Is.EqualTo(100));
        Assert.That(writer.Avail, Is.EqualTo(Page - 110));

        var reader = frame.Reader();
        byte[] back = new byte[110];
        Assert.That(reader.Read(back), Is.EqualTo(110));
        Assert.That(back[..10], Is.All.Zero, "a new frame reads as zero");
        Assert.That(back[10..], Is.EqualTo(data));
        Assert.That(reader.Remain, Is.EqualTo(Page - 110));
    }

    [Test]
    public void Write_and_Read_stop_at_the_end_of_the_frame()
    {
        using UFrame frame = Pool.AllocFrame();
        var writer = frame.Writer();
        writer.Skip(Page - 3);
        Assert.That(writer.Write(new byte[] { 1, 2, 3, 4, 5 }), Is.EqualTo(3));
        Assert.That(writer.HasAvail, Is.False);
        Assert.That(writer.Write(new byte[] { 9 }), Is.Zero);

        var reader = frame.Reader();
        reader.Skip(Page - 3);
        byte[] back = Filled(5, 0xEE);
        Assert.That(reader.Read(back), Is.EqualTo(3));
        Assert.That(back, Is.EqualTo(new byte[] { 1, 2, 3, 0xEE, 0xEE }));
        Assert.That(reader.HasRemain, Is.False);
        Assert.That(reader.Read(back), Is.Zero);
    }

    [Test]
    public void Values_round_trip_unaligned()
    {
        using UFrame frame = Pool.AllocFrame();
        var writer = frame.Writer();
        writer.WriteVal((byte)0x7F);
        writer.WriteVal((ushort)0xBEEF);
        writer.WriteVal(0xDEADBEEFu);
        writer.WriteVal(0x0123456789ABCDEFUL);
        writer.WriteVal(new Guid("00112233-4455-6677-8899-aabbccddeeff"));
        Assert.That(writer.Avail, Is.EqualTo(Page - 31));

        var reader = frame.Reader();
        Assert.That(reader.ReadVal<byte>(), Is.EqualTo((byte)0x7F));
        Assert.That(reader.ReadVal<ushort>(), Is.EqualTo((ushort)0xBEEF));
        Assert.That(reader.ReadVal<uint>(), Is.EqualTo(0xDEADBEEFu));
        Assert.That(reader.ReadVal<ulong>(), Is.EqualTo(0x0123456789ABCDEFUL));
        Assert.That(reader.ReadVal<Guid>(), Is.EqualTo(new Guid("00112233-4455-6677-8899-aabbccddeeff")));
        Assert.That(reader.Remain, Is.EqualTo(Page - 31));
    }

    [Test]
    public void A_value_past_the_end_is_out_of_range_and_the_cursor_stays()
    {
        using UFrame frame = Pool.AllocFrame();
        var reader = frame.Reader();
        reader.Skip(Page - 7);
        var writer = frame.Writer();
        writer.Skip(Page - 3);

        bool readThrew = false, writeThrew = false;
        try { reader.ReadVal<ulong>(); } catch (ArgumentOutOfRangeException) { readThrew = true; }
        try { writer.WriteVal(1u); } catch (ArgumentOutOfRangeException) { writeThrew = true; }

        Assert.That(readThrew, Is.True);
        Assert.That(writeThrew, Is.True);
        Assert.That(reader.Remain, Is.EqualTo(7UL));
        Assert.That(writer.Avail, Is.EqualTo(3UL));
        Assert.That(reader.ReadVal<uint>(), Is.Zero, "a smaller value still fits");
    }

    [Test]
    public void FillZeros_zeroes_all_the_room_left()
    {
        using UFrame frame = Pool.AllocFrame();
        var w = frame.Writer();
        w.Write(Filled((int)Page, 0xAB));

        var writer = frame.Writer();
        writer.Skip(100);
        writer.Limit(200);
        Assert.That(writer.FillZeros(), Is.EqualTo(200UL));
        Assert.That(writer.Avail, Is.Zero);
        Assert.That(writer.FillZeros(), Is.Zero);

        byte[] got = ContentsOf(frame);
        Assert.That(got[..100], Is.All.EqualTo((byte)0xAB));
        Assert.That(got[100..300], Is.All.Zero);
        Assert.That(got[300..], Is.All.EqualTo((byte)0xAB));
    }

    [Test]
    public void Skip_past_the_end_throws_and_does_not_move()
    {
        using UFrame frame = Pool.AllocFrame();
        var reader = frame.Reader();
        var writer = frame.Writer();
        reader.Skip(Page - 1);
        writer.Skip(Page - 1);

        bool readerThrew = false, writerThrew = false;
        try { reader.Skip(2); } catch (ArgumentOutOfRangeException e) when (e.ParamName == "bytes") { readerThrew = true; }
        try { writer.Skip(2); } catch (ArgumentOutOfRangeException e) when (e.ParamName == "bytes") { writerThrew = true; }

        Assert.That(readerThrew && writerThrew, Is.True);
        Assert.That(reader.Remain, Is.EqualTo(1UL));
        Assert.That(writer.Avail, Is.EqualTo(1UL));
        reader.Skip(1);
        writer.Skip(1);
        Assert.That(reader.HasRemain || writer.HasAvail, Is.False);
        reader.Skip(0);
        Assert.That(reader.Remain, Is.Zero);
    }

    [Test]
    public void Limit_only_ever_shrinks()
    {
        using UFrame frame = Pool.AllocFrame();
        var reader = frame.Reader();
        reader.Limit(ulong.MaxValue);
        Assert.That(reader.Remain, Is.EqualTo(Page));
        reader.Limit(100);
        Assert.That(reader.Remain, Is.EqualTo(100UL));
        reader.Limit(4000);
        Assert.That(reader.Remain, Is.EqualTo(100UL), "a larger limit does not grow the range back");
        reader.Limit(0);
        Assert.That(reader.HasRemain, Is.False);
        Assert.That(reader.Read(new byte[10]), Is.Zero);

        var writer = frame.Writer();
        writer.Limit(8);
        Assert.Throws<ArgumentOutOfRangeException>(() => { var w = frame.Writer(); w.Limit(8); w.Skip(9); });
        writer.WriteVal(1UL);
        Assert.That(writer.HasAvail, Is.False);
    }

    [Test]
    public void Reader_to_writer_copies_the_shorter_side_and_advances_both()
    {
        using USegment segment = Pool.AllocSegment(2);
        var fill = segment.Writer();
        fill.Write(PatternOf(Va, (int)(2 * Page)));

        byte[] target = Filled(300, 0xEE);
        fixed (byte* p = target)
        {
            var reader = segment.Reader();
            reader.Skip(Page - 50);
            var writer = InfallibleIo.WriterOver(p, 200);
            Assert.That(reader.Read(ref writer), Is.EqualTo(200UL));
            Assert.That(reader.Remain, Is.EqualTo(Page + 50 - 200));
            Assert.That(writer.Avail, Is.Zero);
        }
        Assert.That(target[..200], Is.EqualTo(PatternOf(Va + Page - 50, 200)), "across the frame boundary of the segment");
        Assert.That(target[200..], Is.All.EqualTo((byte)0xEE));
    }

    [Test]
    public void A_reader_over_library_memory_sees_that_memory()
    {
        byte* buffer = stackalloc byte[16];
        for (int i = 0; i < 16; i++) buffer[i] = (byte)(i + 1);
        var reader = InfallibleIo.ReaderOver(buffer, 16);
        Assert.That(reader.Cursor, Is.EqualTo((nint)buffer));
        Assert.That(reader.ReadVal<uint>(), Is.EqualTo(0x04030201u));
        Assert.That(reader.Cursor, Is.EqualTo((nint)buffer + 4));
        Assert.That(reader.Remain, Is.EqualTo(12UL));
    }

    [Test]
    public void Cursors_of_a_disposed_handle_are_refused()
    {
        UFrame frame = Pool.AllocFrame();
        USegment segment = Pool.AllocSegment(1);
        frame.Dispose();
        segment.Dispose();
        Assert.Throws<ObjectDisposedException>(() => frame.Reader());
        Assert.Throws<ObjectDisposedException>(() => frame.Writer());
        Assert.Throws<ObjectDisposedException>(() => segment.Reader());
        Assert.Throws<ObjectDisposedException>(() => segment.Writer());
    }
}
