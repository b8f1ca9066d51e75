using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Drydock.Runtime.Serialization;

namespace Drydock.Runtime;

/// <summary>
/// Maps stable type names to JSON contracts for messages and effect payloads. Rows store the type name and
/// version; this registry turns them back into records, upgrading older versions where an upgrade is registered.
/// Thread-safe; register everything before the silo starts.
/// </summary>
public sealed class MessageTypeRegistry
{
    private readonly ConcurrentDictionary<string, Entry> _byName = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<Type, Entry> _byType = new();

    /// <summary>Creates a registry that already knows the runtime's own messages.</summary>
    public MessageTypeRegistry()
    {
        Add(RuntimeJsonContext.Default.EffectCompleted);
        Add(RuntimeJsonContext.Default.EffectFailed);
    }

    /// <summary>Registers a message type with its (source-generated) JSON contract.</summary>
    /// <param name="typeInfo">The JSON contract of <typeparamref name="T"/>.</param>
    /// <param name="upgrade">Turns the JSON of an older version into the current record; null if there are none.</param>
    /// <returns>This registry.</returns>
    public MessageTypeRegistry Add<T>(JsonTypeInfo<T> typeInfo, Func<int, JsonElement, T>? upgrade = null)
        where T : IGrainMessage
    {
        ArgumentNullException.ThrowIfNull(typeInfo);
        var entry = new Entry(
            T.TypeName,
            T.TypeVersion,
            typeof(T),
            value => JsonSerializer.Serialize((T)value, typeInfo),
            json => JsonSerializer.Deserialize(json, typeInfo)!,
            upgrade is null ? null : (version, element) => upgrade(version, element)!);
        if (!_byName.TryAdd(entry.Name, entry) && _byName[entry.Name].ClrType != typeof(T))
        {
            throw new ArgumentException($"The type name '{entry.Name}' is already registered for {_byName[entry.Name].ClrType}.", nameof(typeInfo));
        }

        _byType[typeof(T)] = entry;
        return this;
    }

    /// <summary>True if a message type is registered under <paramref name="typeName"/>.</summary>
    public bool Contains(string typeName) => _byName.ContainsKey(typeName);

    /// <summary>Serializes a registered message.</summary>
    /// <exception cref="UnknownGrainTypeException">The CLR type of <paramref name="message"/> is not registered.</exception>
    public SerializedMessage Serialize(object message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!_byType.TryGetValue(message.GetType(), out var entry))
        {
            throw new UnknownGrainTypeException(message.GetType().FullName ?? message.GetType().Name, "message");
        }

        return new SerializedMessage(entry.Name, entry.Version, entry.Serialize(message));
    }

    /// <summary>Deserializes a stored message, upgrading it when it was written at an older version.</summary>
    /// <exception cref="UnknownGrainTypeException">The type name is not registered.</exception>
    /// <exception cref="GrainSchemaVersionException">The stored version is newer, or older without an upgrade.</exception>
    public object Deserialize(string typeName, int typeVersion, string json)
    {
        if (!_byName.TryGetValue(typeName, out var entry))
        {
            throw new UnknownGrainTypeException(typeName, "message");
        }

        if (typeVersion == entry.Version)
        {
            return entry.Deserialize(json);
        }

        if (typeVersion < entry.Version && entry.Upgrade is not null)
        {
            using var document = JsonDocument.Parse(json);
            return entry.Upgrade(typeVersion, document.RootElement);
        }

        throw new GrainSchemaVersionException(typeName, typeVersion, entry.Version);
    }

    /// <summary>Deserializes a stored payload as <typeparamref name="T"/>.</summary>
    public T Deserialize<T>(string typeName, int typeVersion, string json)
        where T : IGrainMessage
        => Deserialize(typeName, typeVersion, json) is T value
            ? value
            : throw new UnknownGrainTypeException(typeName, typeof(T).Name);

    private sealed record Entry(
        string Name,
        int Version,
        Type ClrType,
        Func<object, string> Serialize,
        Func<string, object> Deserialize,
        Func<int, JsonElement, object>? Upgrade);
}

/// <summary>A message ready for the store: its stable type name, version and JSON body.</summary>
/// <param name="TypeName">The stable type name.</param>
/// <param name="TypeVersion">The version of the JSON shape.</param>
/// <param name="Json">The body.</param>
public readonly record struct SerializedMessage(string TypeName, int TypeVersion, string Json);
