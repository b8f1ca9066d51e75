using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Drydock.Hypervisor.Qemu.Qmp;

/// <summary>
/// The QMP wire format, without IO: one JSON object per line in each direction (QEMU ends its lines with CRLF).
/// <see cref="TryReadLine"/> frames, <see cref="Parse"/> classifies, <see cref="FormatCommand"/> writes.
/// See QEMU's docs/interop/qmp-spec.
/// </summary>
public static class QmpProtocol
{
    /// <summary>Longest line accepted from a server (large graphs make large <c>query-named-block-nodes</c> replies).</summary>
    public const int MaxLineLength = 32 * 1024 * 1024;

    /// <summary>
    /// Takes one complete line (without its line end) off the front of <paramref name="buffer"/>.
    /// </summary>
    /// <param name="buffer">Received bytes; on success, what follows the line.</param>
    /// <param name="line">The line, without CR/LF.</param>
    /// <returns>False when no line end has arrived yet (read more).</returns>
    /// <exception cref="QmpProtocolException">More than <see cref="MaxLineLength"/> bytes arrived without a line end.</exception>
    public static bool TryReadLine(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> line)
    {
        var end = buffer.PositionOf((byte)'\n');
        if (end is null)
        {
            if (buffer.Length > MaxLineLength)
            {
                throw new QmpProtocolException($"QMP server sent more than {MaxLineLength} bytes without a line end.");
            }

            line = default;
            return false;
        }

        line = buffer.Slice(0, end.Value);
        buffer = buffer.Slice(buffer.GetPosition(1, end.Value));
        if (line.Length > MaxLineLength)
        {
            throw new QmpProtocolException($"QMP server sent a line of {line.Length} bytes, over the {MaxLineLength} limit.");
        }

        if (!line.IsEmpty && line.Slice(line.Length - 1).FirstSpan[0] == (byte)'\r')
        {
            line = line.Slice(0, line.Length - 1);
        }

        return true;
    }

    /// <summary>Whether a line is blank (only whitespace): QMP allows empty lines; they carry nothing.</summary>
    /// <param name="line">The line.</param>
    /// <returns>True when there is nothing to parse.</returns>
    public static bool IsBlank(ReadOnlySequence<byte> line)
    {
        foreach (var segment in line)
        {
            foreach (var b in segment.Span)
            {
                if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r'))
                {
                    return false;
                }
            }
        }

        return true;
    }

    /// <summary>Parses one line from a QMP server.</summary>
    /// <param name="line">The line (UTF-8 JSON object).</param>
    /// <returns>The message; its JSON values are detached from the line.</returns>
    /// <exception cref="QmpProtocolException">Not JSON, not an object, or none of greeting/return/error/event.</exception>
    public static QmpMessage Parse(ReadOnlySequence<byte> line)
    {
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(line, new JsonDocumentOptions { MaxDepth = 256 });
            root = document.RootElement.Clone();
        }
        catch (JsonException ex)
        {
            throw new QmpProtocolException($"QMP server sent a line that is not JSON: {ex.Message}", ex);
        }

        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new QmpProtocolException($"QMP server sent a JSON {root.ValueKind}, expected an object.");
        }

        var id = root.TryGetProperty("id", out var idElement) ? IdText(idElement) : null;
        if (root.TryGetProperty("return", out var result))
        {
            return new QmpMessage { Kind = QmpMessageKind.Return, Id = id, Payload = result };
        }

        if (root.TryGetProperty("error", out var error))
        {
            if (error.ValueKind != JsonValueKind.Object)
            {
                throw new QmpProtocolException("QMP server sent an 'error' that is not an object.");
            }

            return new QmpMessage
            {
                Kind = QmpMessageKind.Error,
                Id = id,
                Payload = error,
                ErrorClass = StringMember(error, "class") ?? "GenericError",
                ErrorDescription = StringMember(error, "desc") ?? string.Empty,
            };
        }

        if (root.TryGetProperty("event", out var eventName))
        {
            if (eventName.ValueKind != JsonValueKind.String)
            {
                throw new QmpProtocolException("QMP server sent an 'event' whose name is not a string.");
            }

            return new QmpMessage
            {
                Kind = QmpMessageKind.Event,
                EventName = eventName.GetString(),
                Payload = root.TryGetProperty("data", out var data) ? data : EmptyObject,
                Timestamp = ParseTimestamp(root),
            };
        }

        if (root.TryGetProperty("QMP", out var greeting))
        {
            return new QmpMessage { Kind = QmpMessageKind.Greeting, Payload = greeting };
        }

        throw new QmpProtocolException("QMP server sent an object that is no greeting, reply or event.");
    }

    /// <summary>Writes a command as one line (with its LF).</summary>
    /// <param name="command">The command name.</param>
    /// <param name="id">The id QEMU echoes in the reply.</param>
    /// <param name="arguments">Its arguments, or null.</param>
    /// <returns>UTF-8 bytes.</returns>
    public static byte[] FormatCommand(string command, string id, JsonObject? arguments)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("execute", command);
            if (arguments is not null)
            {
                writer.WritePropertyName("arguments");
                arguments.WriteTo(writer);
            }

            writer.WriteString("id", id);
            writer.WriteEndObject();
        }

        var bytes = new byte[buffer.WrittenCount + 1];
        buffer.WrittenSpan.CopyTo(bytes);
        bytes[^1] = (byte)'\n';
        return bytes;
    }

    private static readonly JsonElement EmptyObject = JsonDocument.Parse("{}").RootElement.Clone();

    private static string? IdText(JsonElement id) => id.ValueKind switch
    {
        JsonValueKind.String => id.GetString(),
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        _ => id.GetRawText(),
    };

    private static string? StringMember(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static DateTimeOffset? ParseTimestamp(JsonElement root)
    {
        if (!root.TryGetProperty("timestamp", out var timestamp) || timestamp.ValueKind != JsonValueKind.Object
            || !timestamp.TryGetProperty("seconds", out var seconds) || !seconds.TryGetInt64(out var s)
            || !timestamp.TryGetProperty("microseconds", out var micros) || !micros.TryGetInt64(out var us)
            || s is < 0 or > 253402300799 || us is < 0 or >= 1_000_000)
        {
            return null;
        }

        return DateTimeOffset.FromUnixTimeSeconds(s).AddTicks(us * 10);
    }
}
