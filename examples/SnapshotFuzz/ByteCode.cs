using System.Buffers.Binary;

namespace SnapshotFuzz;

/// <summary>The instructions of the toy guest: a stack machine of 64-bit values.</summary>
/// <remarks>
/// One byte of opcode; <see cref="Push"/> is followed by a 64-bit little-endian immediate,
/// <see cref="Jump"/> and <see cref="JumpIfZero"/> by a 32-bit little-endian guest address.
/// Binary operations pop the right operand first, then the left one, and push the result.
/// </remarks>
public enum Op : byte
{
    /// <summary>Ends the run normally.</summary>
    Halt = 0,
    /// <summary>Pushes the 64-bit immediate that follows.</summary>
    Push = 1,
    /// <summary>Pushes a copy of the top value.</summary>
    Dup = 2,
    /// <summary>Drops the top value.</summary>
    Drop = 3,
    /// <summary>Swaps the two top values.</summary>
    Swap = 4,
    /// <summary>left + right.</summary>
    Add = 5,
    /// <summary>left &amp; right.</summary>
    And = 6,
    /// <summary>left &lt;&lt; right (right taken modulo 64).</summary>
    Shl = 7,
    /// <summary>left &gt;&gt; right (right taken modulo 64).</summary>
    Shr = 8,
    /// <summary>1 if left == right, else 0.</summary>
    Eq = 9,
    /// <summary>1 if left &lt; right (unsigned), else 0.</summary>
    Lt = 10,
    /// <summary>Jumps to the 32-bit address that follows.</summary>
    Jump = 11,
    /// <summary>Pops a value; jumps to the 32-bit address that follows when it is 0.</summary>
    JumpIfZero = 12,
    /// <summary>Pushes the length of the run's input.</summary>
    InputLength = 13,
    /// <summary>Pops an index; pushes the input byte at that index (read from guest memory).</summary>
    InputByte = 14,
    /// <summary>Pops a guest address; pushes the 64-bit value stored there.</summary>
    Load = 15,
    /// <summary>Pops a guest address, then a value; stores the value there (64 bits).</summary>
    Store = 16,
}

/// <summary>
/// A two-pass assembler for <see cref="Op"/> programs, with labels, so the guest program reads as
/// code and not as a byte array.
/// </summary>
public sealed class Assembler
{
    private readonly List<byte> _code = new();
    private readonly Dictionary<string, int> _labels = new();
    private readonly List<(int At, string Label)> _fixups = new();

    /// <summary>A new assembler for a program that will be loaded at guest address <paramref name="origin"/>.</summary>
    public Assembler(ulong origin) => Origin = origin;

    /// <summary>The guest address the program is loaded at (jump targets are absolute).</summary>
    public ulong Origin { get; }

    /// <summary>Appends an instruction without operand.</summary>
    public Assembler Emit(Op op)
    {
        _code.Add((byte)op);
        return this;
    }

    /// <summary>Appends <see cref="Op.Push"/> of <paramref name="value"/>.</summary>
    public Assembler Push(ulong value)
    {
        _code.Add((byte)Op.Push);
        Span<byte> imm = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(imm, value);
        _code.AddRange(imm.ToArray());
        return this;
    }

    /// <summary>Appends a jump (<see cref="Op.Jump"/> or <see cref="Op.JumpIfZero"/>) to <paramref name="label"/>.</summary>
    public Assembler JumpTo(Op op, string label)
    {
        if (op is not (Op.Jump or Op.JumpIfZero)) throw new ArgumentException($"{op} is not a jump", nameof(op));
        _code.Add((byte)op);
        _fixups.Add((_code.Count, label));
        _code.AddRange(new byte[4]);
        return this;
    }

    /// <summary>Names the address of the next instruction.</summary>
    public Assembler Label(string name)
    {
        _labels.Add(name, _code.Count);
        return this;
    }

    /// <summary>The program's bytes, every jump resolved to its label's guest address.</summary>
    /// <exception cref="InvalidOperationException">A jump names a label that was never defined.</exception>
    public byte[] Build()
    {
        byte[] code = _code.ToArray();
        foreach ((int at, string label) in _fixups)
        {
            if (!_labels.TryGetValue(label, out int offset)) throw new InvalidOperationException($"undefined label '{label}'");
            BinaryPrimitives.WriteUInt32LittleEndian(code.AsSpan(at), checked((uint)(Origin + (ulong)offset)));
        }
        return code;
    }
}
