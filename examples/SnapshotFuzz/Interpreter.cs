using UVm;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;

namespace SnapshotFuzz;

/// <summary>How a run ended.</summary>
public enum RunOutcome
{
    /// <summary>The program executed <see cref="Op.Halt"/>.</summary>
    Halted,
    /// <summary>A guest access faulted and UVm could not resolve it: the guest crashed.</summary>
    Fault,
    /// <summary>An opcode the machine does not know.</summary>
    BadOpcode,
    /// <summary>The run used up its step budget.</summary>
    StepLimit,
}

/// <summary>The end of one run: how, after how many steps, at which instruction, and the fault if it was one.</summary>
/// <param name="Outcome">How the run ended.</param>
/// <param name="Steps">Instructions executed.</param>
/// <param name="Pc">The guest address of the last instruction.</param>
/// <param name="Fault">The unresolved fault, for <see cref="RunOutcome.Fault"/>.</param>
/// <param name="What">What the faulting instruction was doing.</param>
public readonly record struct RunResult(RunOutcome Outcome, int Steps, ulong Pc, PageFaultInfo? Fault, string What)
{
    /// <summary>The run in one line: a fault report for a crash.</summary>
    public override string ToString() => Outcome switch
    {
        RunOutcome.Fault when Fault is { } f => $"fault at pc 0x{Pc:x} ({What}): {f.Access} at 0x{f.Address:x} ({f.Kind}) after {Steps} steps",
        RunOutcome.Fault => $"fault at pc 0x{Pc:x} ({What}) after {Steps} steps",
        _ => $"{Outcome} at pc 0x{Pc:x} after {Steps} steps",
    };
}

/// <summary>
/// The toy guest's CPU. Every byte it reads or writes is guest memory, through UVm's fallible
/// readers and writers of the space activated on this thread: its byte code, its input, its
/// stack (the stack pointer is its one register besides the program counter) and its heap.
/// A guest access that faults ends the run with a <see cref="RunOutcome.Fault"/> result; nothing
/// throws.
/// </summary>
public sealed class Interpreter(VmSpace space, int maxSteps = 100_000)
{
    private sealed class GuestFault(PageFaultInfo? fault, string what) : Exception(what)
    {
        public PageFaultInfo? Fault { get; } = fault;
    }

    private ulong _pc, _sp;

    /// <summary>Runs the program from <see cref="GuestLayout.Code"/> with an empty stack until it halts, faults or runs out of steps.</summary>
    public RunResult Run()
    {
        _pc = GuestLayout.Code;
        _sp = GuestLayout.StackTop;
        int steps = 0;
        ulong at = _pc;
        try
        {
            while (steps < maxSteps)
            {
                at = _pc;
                steps++;
                var op = (Op)Load<byte>(_pc, "fetch");
                _pc++;
                switch (op)
                {
                    case Op.Halt: return new RunResult(RunOutcome.Halted, steps, at, null, "halt");
                    case Op.Push: Push(Load<ulong>(_pc, "fetch immediate")); _pc += 8; break;
                    case Op.Dup: { ulong v = Pop(); Push(v); Push(v); break; }
                    case Op.Drop: Pop(); break;
                    case Op.Swap: { ulong r = Pop(), l = Pop(); Push(r); Push(l); break; }
                    case Op.Add: { ulong r = Pop(), l = Pop(); Push(l + r); break; }
                    case Op.And: { ulong r = Pop(), l = Pop(); Push(l & r); break; }
                    case Op.Shl: { ulong r = Pop(), l = Pop(); Push(l << (int)(r & 63)); break; }
                    case Op.Shr: { ulong r = Pop(), l = Pop(); Push(l >> (int)(r & 63)); break; }
                    case Op.Eq: { ulong r = Pop(), l = Pop(); Push(l == r ? 1UL : 0); break; }
                    case Op.Lt: { ulong r = Pop(), l = Pop(); Push(l < r ? 1UL : 0); break; }
                    case Op.Jump: _pc = Load<uint>(_pc, "fetch target"); break;
                    case Op.JumpIfZero:
                    {
                        uint target = Load<uint>(_pc, "fetch target");
                        _pc = Pop() == 0 ? target : _pc + 4;
                        break;
                    }
                    case Op.InputLength: Push(Load<ulong>(GuestLayout.Input, "read input length")); break;
                    case Op.InputByte: Push(Load<byte>(GuestLayout.Input + 8 + Pop(), "read input byte")); break;
                    case Op.Load: Push(Load<ulong>(Pop(), "load")); break;
                    case Op.Store: { ulong address = Pop(), value = Pop(); Store(address, value, "store"); break; }
                    default: return new RunResult(RunOutcome.BadOpcode, steps, at, null, $"opcode {(byte)op}");
                }
            }
            return new RunResult(RunOutcome.StepLimit, steps, at, null, "step limit");
        }
        catch (GuestFault f)
        {
            return new RunResult(RunOutcome.Fault, steps, at, f.Fault, f.Message);
        }
    }

    private void Push(ulong value)
    {
        _sp -= 8;
        Store(_sp, value, "push");
    }

    private ulong Pop()
    {
        ulong v = Load<ulong>(_sp, "pop");
        _sp += 8;
        return v;
    }

    private unsafe T Load<T>(ulong va, string what) where T : unmanaged
    {
        if (!Inside(va, (ulong)sizeof(T))) throw new GuestFault(null, $"{what} outside the address space at 0x{va:x}");
        VmReader<Fallible> reader = space.Reader(va, (ulong)sizeof(T));
        IoResult<T> r = reader.ReadVal<T>();
        if (!r.IsOk) throw new GuestFault(r.Fault, what);
        return r.Value;
    }

    private void Store(ulong va, ulong value, string what)
    {
        if (!Inside(va, 8)) throw new GuestFault(null, $"{what} outside the address space at 0x{va:x}");
        VmWriter<Fallible> writer = space.Writer(va, 8);
        IoResult<ulong> r = writer.WriteVal(value);
        if (!r.IsOk) throw new GuestFault(r.Fault, what);
    }

    private bool Inside(ulong va, ulong len) => va <= space.Size && len <= space.Size - va;
}
