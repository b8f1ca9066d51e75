using System.Buffers;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Tests.TestSupport;

/// <summary>
/// A hand-driven handshake over a stream, built on the codec, for tests that need to send what a correct
/// client never would (or to see exactly what the server answers).
/// </summary>
public sealed class RawNbdConnection : IAsyncDisposable
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(10);

    public RawNbdConnection(Stream stream)
    {
        Stream = stream;
    }

    public Stream Stream { get; }

    /// <summary>Reads the greeting and answers with fixed newstyle + no zeroes.</summary>
    public async Task<NbdHandshakeFlags> StartAsync(NbdClientFlags flags = NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes)
    {
        var greeting = await ReadAsync(NbdSizes.ServerGreeting);
        NbdHandshakeCodec.TryReadServerGreeting(greeting, out var serverFlags);
        var clientFlags = new byte[NbdSizes.ClientFlags];
        NbdHandshakeCodec.WriteClientFlags(clientFlags, flags);
        await Stream.WriteAsync(clientFlags);
        return serverFlags;
    }

    public async Task SendOptionAsync(NbdOption option, ReadOnlyMemory<byte> payload = default)
    {
        var writer = new ArrayBufferWriter<byte>();
        NbdHandshakeCodec.WriteOption(writer, option, payload.Span);
        await Stream.WriteAsync(writer.WrittenMemory);
    }

    public async Task<(NbdOptionReplyHeader Header, byte[] Payload)> ReadReplyAsync()
    {
        NbdHandshakeCodec.TryReadOptionReplyHeader(await ReadAsync(NbdSizes.OptionReplyHeader), out var header);
        return (header, await ReadAsync((int)header.Length));
    }

    /// <summary>Reads replies up to and including the final one (ACK or an error).</summary>
    public async Task<List<(NbdOptionReplyHeader Header, byte[] Payload)>> ReadRepliesAsync()
    {
        var replies = new List<(NbdOptionReplyHeader, byte[])>();
        while (true)
        {
            var reply = await ReadReplyAsync();
            replies.Add(reply);
            if (reply.Header.ReplyType == NbdOptionReplyType.Ack || reply.Header.IsError)
            {
                return replies;
            }
        }
    }

    public async Task<byte[]> ReadAsync(int count)
    {
        var buffer = new byte[count];
        await Stream.ReadExactlyAsync(buffer).AsTask().WaitAsync(Guard);
        return buffer;
    }

    /// <summary>True when the server closed the connection (EOF or a reset), reading and discarding anything before it.</summary>
    public async Task<bool> ServerClosedAsync()
    {
        var buffer = new byte[4096];
        try
        {
            while (await Stream.ReadAsync(buffer).AsTask().WaitAsync(Guard) > 0)
            {
            }

            return true;
        }
        catch (IOException)
        {
            return true;
        }
    }

    public ValueTask DisposeAsync() => Stream.DisposeAsync();
}
