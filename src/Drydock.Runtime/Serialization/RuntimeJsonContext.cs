using System.Text.Json.Serialization;

namespace Drydock.Runtime.Serialization;

/// <summary>Source-generated JSON metadata for the messages the runtime itself sends.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(EffectCompleted))]
[JsonSerializable(typeof(EffectFailed))]
internal sealed partial class RuntimeJsonContext : JsonSerializerContext;
