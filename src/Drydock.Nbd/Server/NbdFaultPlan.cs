using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Server;

/// <summary>A way the server breaks the handshake, for tests of clients.</summary>
public enum NbdHandshakeFault
{
    /// <summary>A correct handshake.</summary>
    None = 0,

    /// <summary>The greeting starts with a magic other than NBDMAGIC.</summary>
    WrongGreetingMagic = 1,

    /// <summary>The greeting does not offer NBD_FLAG_FIXED_NEWSTYLE.</summary>
    NoFixedNewstyle = 2,

    /// <summary>An oldstyle greeting (NBDMAGIC, the oldstyle magic, size, flags, 124 zeroes).</summary>
    Oldstyle = 3,

    /// <summary>The first option reply names an option the client did not send.</summary>
    ReplyToUnsentOption = 4,

    /// <summary>The first NBD_REP_ACK is sent twice.</summary>
    RepeatedReply = 5,

    /// <summary>NBD_INFO_EXPORT comes with 10 bytes instead of 12 (its length contradicts its type).</summary>
    ExportInfoWrongLength = 6,

    /// <summary>The NBD_OPT_GO / NBD_OPT_INFO reply header claims a 1 GiB payload (and none follows).</summary>
    OversizedOptionReply = 7,

    /// <summary>NBD_OPT_SET_META_CONTEXT selects <c>base:allocation</c> but never a <c>qemu:dirty-bitmap:</c> context.</summary>
    MissingMetaContext = 8,

    /// <summary>NBD_OPT_STRUCTURED_REPLY is answered with NBD_REP_ERR_UNSUP.</summary>
    RefuseStructuredReplies = 9,
}

/// <summary>How the server answers a request a <see cref="NbdRequestFault"/> matches.</summary>
public enum NbdReplyFault
{
    /// <summary>Wait <see cref="NbdRequestFault.Delay"/>, then answer correctly.</summary>
    Delay = 0,

    /// <summary>
    /// Fail with <see cref="NbdRequestFault.Error"/>. With a range, a READ first gets the data before the
    /// range, then NBD_REPLY_TYPE_ERROR_OFFSET naming the first failing byte; without one, NBD_REPLY_TYPE_ERROR
    /// (or a simple error reply when structured replies are off). Nothing is written.
    /// </summary>
    Error = 1,

    /// <summary>Never answer (the request hangs).</summary>
    NoReply = 2,

    /// <summary>A reply header with a wrong magic.</summary>
    WrongMagic = 3,

    /// <summary>A complete reply carrying a cookie no request used.</summary>
    UnknownCookie = 4,

    /// <summary>The correct reply, then a second reply with the same, already completed, cookie.</summary>
    RepeatedReply = 5,

    /// <summary>A simple reply (with data) to a READ although structured replies were negotiated.</summary>
    SimpleReplyToStructuredRead = 6,

    /// <summary>Half a reply header, then the connection closes.</summary>
    EofInHeader = 7,

    /// <summary>A chunk header and half its payload, then the connection closes.</summary>
    EofInPayload = 8,

    /// <summary>
    /// A chunk header claiming a payload of about 4 GiB (OFFSET_DATA for READ, BLOCK_STATUS for BLOCK_STATUS,
    /// ERROR otherwise), and nothing after it.
    /// </summary>
    OversizedChunk = 9,

    /// <summary>NBD_REPLY_TYPE_OFFSET_DATA just past the end of the request.</summary>
    DataOutsideRequest = 10,

    /// <summary>NBD_REPLY_TYPE_OFFSET_HOLE just past the end of the request.</summary>
    HoleOutsideRequest = 11,

    /// <summary>Two content chunks that overlap by one byte.</summary>
    OverlappingContent = 12,

    /// <summary>The first half of the data sent twice, the second half never: the byte count adds up, the coverage does not.</summary>
    DuplicateContentWithGap = 13,

    /// <summary>The first half of the data, then NBD_REPLY_TYPE_NONE with DONE.</summary>
    DoneWithBytesMissing = 14,

    /// <summary>All the data, but no chunk carries NBD_REPLY_FLAG_DONE (the request hangs).</summary>
    NoDone = 15,

    /// <summary>NBD_REPLY_TYPE_ERROR with error code 0.</summary>
    ErrorZeroCode = 16,

    /// <summary>NBD_REPLY_TYPE_ERROR whose message is 5,000 bytes (the limit is 4,096).</summary>
    ErrorOversizedMessage = 17,

    /// <summary>NBD_REPLY_TYPE_ERROR_OFFSET naming an offset outside the request.</summary>
    ErrorOffsetOutsideRequest = 18,

    /// <summary>A chunk of unknown type 0x0042 (bit 15 clear: the client must hang up).</summary>
    UnknownChunkType = 19,

    /// <summary>A chunk of unknown type 0x8042 with a valid error prefix (bit 15 set: only the request fails).</summary>
    UnknownErrorChunkType = 20,

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS of 9 bytes (not 4 plus a multiple of 8).</summary>
    BlockStatusBadLength = 21,

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS with two extents (a violation when the request set REQ_ONE).</summary>
    BlockStatusTooManyExtents = 22,

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS for a context id that was never negotiated.</summary>
    BlockStatusUnknownContext = 23,

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS with an extent of length 0.</summary>
    BlockStatusZeroLengthExtent = 24,

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS with an extent that passes the export end.</summary>
    BlockStatusPastExportEnd = 25,
}

/// <summary>
/// One rule of a <see cref="NbdFaultPlan"/>: which requests it matches and how the server answers them.
/// A request matches when every filter that is set matches.
/// </summary>
/// <param name="Fault">How the server answers.</param>
public sealed record NbdRequestFault(NbdReplyFault Fault)
{
    /// <summary>Only this command; null matches every command except NBD_CMD_DISC.</summary>
    public NbdCommand? Command { get; init; }

    /// <summary>With <see cref="RangeLength"/>: only requests that overlap this range (for a zero-length request, that contain its offset).</summary>
    public ulong RangeOffset { get; init; }

    /// <summary>Length of the range; <see cref="ulong.MaxValue"/> (the default) means "to the end".</summary>
    public ulong RangeLength { get; init; } = ulong.MaxValue;

    /// <summary>Only requests longer than this many bytes; null for any length.</summary>
    public uint? LongerThan { get; init; }

    /// <summary>How many requests the rule applies to before it retires. Default: unlimited.</summary>
    public int Count { get; init; } = int.MaxValue;

    /// <summary>For <see cref="NbdReplyFault.Error"/>: the error code. Default: EIO.</summary>
    public NbdErrorCode Error { get; init; } = NbdErrorCode.IOError;

    /// <summary>For <see cref="NbdReplyFault.Delay"/>: how long to wait.</summary>
    public TimeSpan Delay { get; init; }

    /// <summary>Whether the rule names a range (then an error reply names the first failing offset).</summary>
    public bool HasRange => RangeOffset != 0 || RangeLength != ulong.MaxValue;

    /// <summary>Answers every matching request in a broken way.</summary>
    /// <param name="fault">How.</param>
    /// <param name="command">Only this command; null for all.</param>
    /// <returns>The rule.</returns>
    public static NbdRequestFault Reply(NbdReplyFault fault, NbdCommand? command = null) => new(fault) { Command = command };

    /// <summary>Fails requests that touch a range (for example EIO on a bad sector), naming the offset.</summary>
    /// <param name="offset">Start of the bad range.</param>
    /// <param name="length">Length of the bad range.</param>
    /// <param name="error">The error. Default: EIO.</param>
    /// <param name="command">Only this command. Default: READ.</param>
    /// <returns>The rule.</returns>
    public static NbdRequestFault FailRange(ulong offset, ulong length, NbdErrorCode error = NbdErrorCode.IOError, NbdCommand? command = NbdCommand.Read)
        => new(NbdReplyFault.Error) { RangeOffset = offset, RangeLength = length, Error = error, Command = command };

    /// <summary>Fails requests longer than a size (EINVAL, EOVERFLOW): a client must retry smaller.</summary>
    /// <param name="length">Requests longer than this fail.</param>
    /// <param name="error">The error.</param>
    /// <param name="command">Only this command; null for all.</param>
    /// <returns>The rule.</returns>
    public static NbdRequestFault FailLongerThan(uint length, NbdErrorCode error, NbdCommand? command = null)
        => new(NbdReplyFault.Error) { LongerThan = length, Error = error, Command = command };

    /// <summary>Delays the answer to matching requests.</summary>
    /// <param name="delay">How long.</param>
    /// <param name="command">Only this command; null for all.</param>
    /// <returns>The rule.</returns>
    public static NbdRequestFault DelayBy(TimeSpan delay, NbdCommand? command = null)
        => new(NbdReplyFault.Delay) { Delay = delay, Command = command };

    /// <summary>Whether the rule's filters match a request.</summary>
    /// <param name="request">The request.</param>
    /// <returns>True when they do.</returns>
    public bool Matches(in NbdRequestHeader request)
    {
        if (request.Command == NbdCommand.Disconnect || (Command is { } command && command != request.Command))
        {
            return false;
        }

        if (LongerThan is { } longer && request.Length <= longer)
        {
            return false;
        }

        if (!HasRange)
        {
            return true;
        }

        var rangeEnd = RangeLength > ulong.MaxValue - RangeOffset ? ulong.MaxValue : RangeOffset + RangeLength;
        var requestEnd = request.Offset > ulong.MaxValue - request.Length ? ulong.MaxValue : request.Offset + request.Length;
        return request.Length == 0
            ? request.Offset >= RangeOffset && request.Offset < rangeEnd
            : request.Offset < rangeEnd && RangeOffset < requestEnd;
    }
}

/// <summary>
/// Faults an <see cref="NbdServer"/> injects, for tests of clients: every case of "bad input an NBD client
/// must reject". The server consults the plan at defined points: the greeting, each option reply, the export
/// information it sends (size, block sizes), the metadata contexts it selects, and each transmission request
/// before it runs (the first matching rule decides the answer). A plan may be changed while connections
/// are open; it is thread-safe.
/// </summary>
public sealed class NbdFaultPlan
{
    private readonly Lock _lock = new();
    private readonly List<Rule> _rules = [];
    private readonly List<NbdRequestHeader> _requests = [];
    private int _fired;

    /// <summary>How every connection's handshake is broken. Default: it is not.</summary>
    public NbdHandshakeFault Handshake { get; set; }

    /// <summary>Export size to announce instead of the real one (0, or more than 2^63, to test clients). Default: the real size.</summary>
    public ulong? ExportSize { get; set; }

    /// <summary>Block sizes to announce instead of the real ones, sent unchecked. Default: the real ones.</summary>
    public NbdBlockSizes? BlockSizes { get; set; }

    /// <summary>Whether to record the header of every transmission request the plan is consulted for.</summary>
    public bool RecordRequests { get; set; }

    /// <summary>How many times a request rule has fired.</summary>
    public int Fired => Volatile.Read(ref _fired);

    /// <summary>Request headers seen while <see cref="RecordRequests"/> was on (the newest 10,000).</summary>
    public IReadOnlyList<NbdRequestHeader> Requests
    {
        get
        {
            lock (_lock)
            {
                return [.. _requests];
            }
        }
    }

    /// <summary>Adds a request rule after the existing ones.</summary>
    /// <param name="fault">The rule.</param>
    /// <returns>This plan.</returns>
    public NbdFaultPlan Add(NbdRequestFault fault)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(fault.Count, 1);
        lock (_lock)
        {
            _rules.Add(new Rule(fault, fault.Count));
        }

        return this;
    }

    /// <summary>Removes every request rule.</summary>
    public void ClearRequestFaults()
    {
        lock (_lock)
        {
            _rules.Clear();
        }
    }

    /// <summary>Finds the first live rule matching a request and uses one of its firings.</summary>
    /// <param name="request">The request.</param>
    /// <returns>The rule, or null.</returns>
    internal NbdRequestFault? Consult(in NbdRequestHeader request)
    {
        lock (_lock)
        {
            if (RecordRequests)
            {
                if (_requests.Count >= 10_000)
                {
                    _requests.RemoveAt(0);
                }

                _requests.Add(request);
            }

            foreach (var rule in _rules)
            {
                if (rule.Remaining > 0 && rule.Fault.Matches(request))
                {
                    rule.Remaining--;
                    _fired++;
                    return rule.Fault;
                }
            }
        }

        return null;
    }

    private sealed class Rule(NbdRequestFault fault, int remaining)
    {
        public NbdRequestFault Fault { get; } = fault;

        public int Remaining { get; set; } = remaining;
    }
}
