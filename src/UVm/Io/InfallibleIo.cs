using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace UVm.Io;

/// <summary>The operations of infallible readers and writers: plain copies of memory that cannot fault.</summary>
public static unsafe class InfallibleIo
{
    /// <summary>A reader over <paramref name="buffer"/>; the buffer must stay pinned while the reader is used.</summary>
    public static VmReader<Infallible> ReaderOver(byte* buffer, ulong length) => new(buffer, length);

    /// <summary>A writer over <paramref name="buffer"/>; the buffer must stay pinned while the writer is used.</summary>
    public static VmWriter<Infallible> WriterOver(byte* buffer, ulong length) => new(buffer, length);

    /// <summary>Copies <c>min(Remain, destination.Length)</c> bytes into <paramref name="destination"/>; returns the count.</summary>
    public static int Read(this ref VmReader<Infallible> reader, Span<byte> destination)
    {
        int n = (int)Math.Min(reader.Remain, (ulong)destination.Length);
        // SAFETY: the reader's range is library memory that stays valid while the reader lives
        // (its creator's contract), and n bytes remain in it and fit in the span.
        new ReadOnlySpan<byte>(reader._cursor, n).CopyTo(destination);
        reader.Advance((ulong)n);
        return n;
    }

    /// <summary>Copies <c>min(Remain, writer.Avail)</c> bytes into <paramref name="writer"/>; returns the count.</summary>
    public static ulong Read(this ref VmReader<Infallible> reader, ref VmWriter<Infallible> writer)
    {
        ulong n = Math.Min(reader.Remain, writer.Avail);
        // SAFETY: both ranges are valid library memory holding at least n bytes.
        Buffer.MemoryCopy(reader._cursor, writer._cursor, n, n);
        reader.Advance(n);
        writer.Advance(n);
        return n;
    }

    /// <summary>Reads one value of <typeparamref name="T"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than <c>sizeof(T)</c> bytes remain.</exception>
    public static T ReadVal<T>(this ref VmReader<Infallible> reader) where T : unmanaged
    {
        if (reader.Remain < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {reader.Remain} bytes remain", nameof(T));
        // SAFETY: sizeof(T) bytes of valid memory remain; the read is unaligned-safe.
        T value = Unsafe.ReadUnaligned<T>(reader._cursor);
        reader.Advance((ulong)sizeof(T));
        return value;
    }

    /// <summary>Copies <c>min(source.Length, Avail)</c> bytes from <paramref name="source"/>; returns the count.</summary>
    public static int Write(this ref VmWriter<Infallible> writer, ReadOnlySpan<byte> source)
    {
        int n = (int)Math.Min(writer.Avail, (ulong)source.Length);
        // SAFETY: the writer's range is valid library memory with n bytes of room.
        source[..n].CopyTo(new Span<byte>(writer._cursor, n));
        writer.Advance((ulong)n);
        return n;
    }

    /// <summary>Writes one value of <typeparamref name="T"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Less than <c>sizeof(T)</c> bytes of room remain.</exception>
    public static void WriteVal<T>(this ref VmWriter<Infallible> writer, T value) where T : unmanaged
    {
        if (writer.Avail < (ulong)sizeof(T)) ThrowHelper.OutOfRange($"only {writer.Avail} bytes of room remain", nameof(T));
        // SAFETY: sizeof(T) bytes of room remain; the write is unaligned-safe.
        Unsafe.WriteUnaligned(writer._cursor, value);
        writer.Advance((ulong)sizeof(T));
    }

    /// <summary>Zeroes all remaining room; returns the count.</summary>
    public static ulong FillZeros(this ref VmWriter<Infallible> writer)
    {
        ulong n = writer.Avail;
        // SAFETY: the writer's range is valid library memory of n bytes.
        NativeMemory.Clear(writer._cursor, (nuint)n);
        writer.Advance(n);
        return n;
    }
}
